/**
 * Small helpers over the Docker Engine API (dockerode): the engine connection's HTTP agent, reading the
 * JSON-lines progress streams of build / push / pull, and classifying the engine's HTTP errors.
 */
import { Agent } from "node:http";
import Docker from "dockerode";
import type { Readable } from "node:stream";
import { inspect } from "node:util";

/**
 * The HTTP agent of the driver's engine connection: no keep-alive (Node 20's global agent keeps sockets, and
 * after an engine restart the first call on a kept socket fails with EPIPE), and a one-word `util.inspect`.
 *
 * Why the latter: docker-modem (5.0.7, `Modem.buildRequest`) formats every request's options for its debug
 * log with `util.inspect(options, { showHidden: true, depth: null })` *before* calling `debug`, so even with
 * the log off each engine call inspects the options, and they hold the agent — whose `sockets` are every
 * open connection to the engine: the attach stream of every running container. One call cost CPU in
 * proportion to the containers running, a burst of calls the square: in a Docker burst of 200 requests into
 * a pool of 16 (bench/burst.ts) the gateway process spent ~3 s of CPU, 8 of 10 s in a whole run's profile in
 * `inspect` under `buildRequest` (docs/prewarm.md, "Round five"). Nothing else of the agent is inspected.
 */
export class EngineAgent extends Agent {
  constructor() {
    super({ keepAlive: false });
  }

  [inspect.custom](): string {
    return "EngineAgent";
  }
}

/** The driver's default engine client: /var/run/docker.sock (or DOCKER_HOST) through an EngineAgent. */
export function engineClient(): Docker {
  return new Docker({ agent: new EngineAgent() } as Docker.DockerOptions);
}

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
