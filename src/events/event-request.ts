/**
 * The one event model (docs/events.md "The event model"): every event the platform delivers to a function
 * is a CloudEvents 1.0 event in HTTP binary content mode — the attributes as `ce-*` headers (`ce-id`,
 * `ce-source`, `ce-type`, `ce-specversion`, `ce-time`, `ce-subject`, extensions), `content-type` from
 * `datacontenttype`, and the data as the body — POSTed to the function's root. Every event source
 * (schedules here; queue, database and storage triggers) builds its job request with `eventJobRequest`,
 * so they cannot drift apart. Serialization is the `cloudevents` SDK's (`HTTP.binary`), which also
 * validates the event against the CloudEvents 1.0 schema.
 *
 * Control-side only (the SDK is ~70 KB and ~100 ms to load: it never goes into an instance; the runtime
 * and the function SDK parse events with src/shared/cloudevent-parse.ts).
 */
import { CloudEvent, HTTP } from "cloudevents";
import { StratusError } from "../shared/errors";
import type { JobRequest } from "./queue";

/** The attributes of an event the platform emits (CloudEvents 1.0 §3.1; `specversion` is always 1.0). */
export interface PlatformEventAttributes {
  /** Unique per source; stable across retries and control planes (the consumer's deduplication key). */
  readonly id: string;
  /** URI reference, `stratus://functions/<fn>/triggers/<index>` for triggers. */
  readonly source: string;
  /** Reverse-DNS type, e.g. `io.stratus.schedule.fired` (see EVENT_TYPES). */
  readonly type: string;
  /** When the occurrence happened (RFC 3339). Required here: the platform always knows it. */
  readonly time: string;
  readonly subject?: string;
  /** Default `application/json` (data is then serialized as JSON). */
  readonly datacontenttype?: string;
  readonly dataschema?: string;
  /** Extension attributes: lower-case a–z, 0–9 names (§3.1.1), string/number/boolean values. */
  readonly extensions?: Readonly<Record<string, string | number | boolean>>;
}

/** CloudEvents `type` of every event the platform itself emits. Others add theirs here. */
export const EVENT_TYPES = {
  /** A schedule (`schedule` cron or `rate`) trigger's slot came due. */
  scheduleFired: "io.stratus.schedule.fired",
} as const;

/** `source` of trigger `index` of function `fn`. */
export function triggerSource(fn: string, index: number): string {
  return `stratus://functions/${fn}/triggers/${index}`;
}

/**
 * The job request delivering one event: `POST /` in binary content mode (see the file comment).
 * Bytes data (`Uint8Array`) is sent as is (`datacontenttype` should then say what it is); any other
 * value as JSON.
 * @throws StratusError INVALID_ARGUMENT when the attributes do not make a valid CloudEvents 1.0 event.
 */
export function eventJobRequest(attributes: PlatformEventAttributes, data: unknown): JobRequest {
  const { extensions, ...core } = attributes;
  let event: CloudEvent<unknown>;
  try {
    event = new CloudEvent<unknown>({ ...extensions, ...core, specversion: "1.0", datacontenttype: core.datacontenttype ?? "application/json", data });
  } catch (err) {
    throw new StratusError("INVALID_ARGUMENT", `Not a valid CloudEvent: ${(err as Error).message}`, { cause: err });
  }
  const message = HTTP.binary(event);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(message.headers)) if (v !== undefined) headers[k.toLowerCase()] = String(v);
  const body = message.body;
  const bytes = body instanceof Uint8Array ? Buffer.from(body.buffer, body.byteOffset, body.byteLength) : Buffer.from(typeof body === "string" ? body : JSON.stringify(body ?? null));
  return { method: "POST", path: "/", headers, bodyBase64: bytes.toString("base64") };
}
