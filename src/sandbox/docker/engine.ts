/**
 * Small helpers over the Docker Engine API (dockerode): reading the JSON-lines progress streams of
 * build / push / pull, and classifying the engine's HTTP errors.
 */
import type { Readable } from "node:stream";

/** One event of a build, push or pull progress stream (only the fields Stratus reads). */
export interface ProgressEvent {
  stream?: string;
  status?: string;
  id?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string; Tag?: string; Digest?: string; Size?: number };
}

/**
 * Reads a progress stream to its end, calling `onEvent` for each event.
 * Resolves with every event; rejects with the engine's own message when an event carries `error`
 * (the engine reports build and push failures in-band, with HTTP 200).
 */
export function followProgress(stream: NodeJS.ReadableStream, onEvent?: (e: ProgressEvent) => void): Promise<ProgressEvent[]> {
  return new Promise((resolve, reject) => {
    const events: ProgressEvent[] = [];
    let buffer = "";
    let failed: Error | null = null;
    const take = (line: string) => {
      if (line.trim() === "") return;
      let event: ProgressEvent;
      try {
        event = JSON.parse(line) as ProgressEvent;
      } catch {
        event = { stream: line };
      }
      events.push(event);
      if (event.error !== undefined && failed === null) failed = new Error(event.errorDetail?.message ?? event.error);
      onEvent?.(event);
    };
    const s = stream as Readable;
    s.setEncoding("utf8");
    s.on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        take(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
      }
    });
    s.once("error", reject);
    s.once("end", () => {
      take(buffer);
      if (failed !== null) reject(failed);
      else resolve(events);
    });
  });
}

/** The HTTP status of a dockerode error, or undefined for transport errors (engine down). */
export function engineStatus(err: unknown): number | undefined {
  const status = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === "number" ? status : undefined;
}

/** True for "no such container / image / network". */
export function isNotFound(err: unknown): boolean {
  return engineStatus(err) === 404;
}
