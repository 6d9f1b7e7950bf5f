/**
 * Redis Streams trigger source (ioredis): a consumer group on one stream key.
 *
 *  - New entries: `XREADGROUP GROUP <group> <consumer> COUNT n BLOCK <wait> STREAMS <stream> >` on a
 *    connection of its own (it blocks); settling uses a second connection.
 *  - Success: `XACK`. Dead (after the runner recorded it in the platform DLQ): `XACK`.
 *  - Failure: the entry stays pending; `XCLAIM … IDLE <leaseMs − delayMs> JUSTID` (no delivery counted)
 *    sets its idle time so that it becomes reclaimable `delayMs` from now (at most `leaseMs`: Redis keeps
 *    no schedule of its own, so a retry delay longer than the lease is cut to the lease).
 *  - Reclaim: before each read, `XAUTOCLAIM <stream> <group> <consumer> <leaseMs> <cursor> COUNT n` takes
 *    entries idle for at least `leaseMs` — failed ones whose delay passed, and those of consumers that
 *    died mid-delivery — and counts a delivery for each; their delivery count is read with `XPENDING`.
 *  - The group is created at `0` with MKSTREAM when missing: a new trigger consumes what the stream
 *    already holds. The consumer name is unique per source start (`<host>-<pid>-<random>`); on a clean
 *    stop with nothing pending it is deleted (`XGROUP DELCONSUMER`), else left for XAUTOCLAIM.
 *
 * The message body is the entry's `data` field (with `contentType` as its media type when present);
 * an entry without `data` is delivered as a JSON object of its fields. ce-id is the entry id
 * (`<ms>-<seq>`, stable), ce-time its millisecond part, ce-source `redis://<stream>`.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { Redis } from "ioredis";
import type { QueueTriggerConfig } from "../../shared/function-config";
import { createSourceCore, type Broker, type BrokerSession, type Fetched } from "./source-core";
import type { EventSource, SourceContext, SourceMessage } from "./source";

/** CloudEvents type of a Redis Streams entry. */
export const REDIS_EVENT_TYPE = "io.stratus.queue.redis.message";

type Entry = [id: Buffer, fields: Buffer[] | null];

interface RedisRaw {
  readonly id: string;
}

/** Opens one ioredis connection that never reconnects or queues by itself (the core owns reconnection). */
async function open(url: string, name: string): Promise<Redis> {
  const r = new Redis(url, {
    lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 5_000,
    protocol: 2, connectionName: name, enableReadyCheck: true,
  });
  r.on("error", () => {}); // surfaced through the failing command; never an unhandled 'error' event
  try {
    await r.connect();
  } catch (err) {
    r.disconnect();
    throw err;
  }
  return r;
}

/** The source for a `{ queue: { type: "redis", … } }` trigger. */
export function createRedisSource(config: QueueTriggerConfig, ctx: SourceContext): EventSource {
  const stream = config.stream as string;
  const group = config.consumer ?? ctx.consumerName;
  const consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const source = `redis://${stream}`;

  function toMessage(e: Entry, attempt: number): SourceMessage {
    const id = e[0].toString();
    const fields = new Map<string, Buffer>();
    const list = e[1] ?? [];
    for (let i = 0; i + 1 < list.length; i += 2) fields.set((list[i] as Buffer).toString(), list[i + 1] as Buffer);
    const data = fields.get("data");
    const contentType = fields.get("contentType")?.toString();
    const body = data ?? Buffer.from(JSON.stringify(Object.fromEntries([...fields].map(([k, v]) => [k, v.toString()]))));
    const ms = Number(id.split("-")[0]);
    return {
      id, source, type: REDIS_EVENT_TYPE, subject: stream, attempt, body,
      ...(Number.isFinite(ms) ? { time: ms } : {}),
      ...(data === undefined ? { contentType: "application/json" } : contentType !== undefined ? { contentType } : {}),
    };
  }

  const broker: Broker<RedisRaw> = {
    async connect(): Promise<BrokerSession<RedisRaw>> {
      const cmd = await open(ctx.url, `stratus:${ctx.triggerId}`);
      let reader: Redis;
      try {
        reader = await open(ctx.url, `stratus:${ctx.triggerId}:read`);
      } catch (err) {
        cmd.disconnect();
        throw err;
      }
      try {
        await cmd.call("XGROUP", "CREATE", stream, group, "0", "MKSTREAM");
      } catch (err) {
        if (!String((err as Error).message).startsWith("BUSYGROUP")) {
          cmd.disconnect();
          reader.disconnect();
          throw err;
        }
      }
      const held = new Set<string>();
      let cursor = "0-0";

      /** Delivery counts of pending entries (XPENDING per id, in one round trip). */
      async function deliveryCounts(ids: string[]): Promise<Map<string, number>> {
        const p = cmd.pipeline();
        for (const id of ids) p.call("XPENDING", stream, group, id, id, "1");
        const replies = (await p.exec()) ?? [];
        const out = new Map<string, number>();
        for (const [err, rows] of replies) {
          if (err !== null) throw err;
          const row = (rows as Array<[string, string, number, number]>)[0];
          if (row !== undefined) out.set(row[0], Number(row[3]));
        }
        return out;
      }

      return {
        async fetch(max, waitMs) {
          // Reclaim first: entries idle ≥ leaseMs (failed ones whose delay passed, or a dead consumer's).
          const claimed = (await cmd.callBuffer("XAUTOCLAIM", stream, group, consumer, String(ctx.leaseMs), cursor, "COUNT", String(max))) as [Buffer, Entry[], Buffer[]?];
          cursor = claimed[0].toString();
          const entries = claimed[1].filter((e) => e[1] !== null && !held.has(e[0].toString()));
          if (entries.length > 0) {
            const counts = await deliveryCounts(entries.map((e) => e[0].toString()));
            return entries.map((e): Fetched<RedisRaw> => {
              const id = e[0].toString();
              held.add(id);
              return { message: toMessage(e, counts.get(id) ?? 2), raw: { id } };
            });
          }
          const r = (await reader.callBuffer("XREADGROUP", "GROUP", group, consumer, "COUNT", String(max), "BLOCK", String(Math.max(1, waitMs)), "STREAMS", stream, ">")) as Array<[Buffer, Entry[]]> | null;
          const fresh = r?.[0]?.[1] ?? [];
          return fresh.filter((e) => e[1] !== null).map((e) => {
            const id = e[0].toString();
            held.add(id);
            return { message: toMessage(e, 1), raw: { id } };
          });
        },
        async settle(raw, outcome) {
          try {
            if (outcome.kind === "retry") {
              const idle = Math.max(0, ctx.leaseMs - Math.max(0, Math.round(outcome.delayMs)));
              await cmd.call("XCLAIM", stream, group, consumer, "0", raw.id, "IDLE", String(idle), "JUSTID");
            } else {
              await cmd.call("XACK", stream, group, raw.id);
            }
          } finally {
            held.delete(raw.id);
          }
        },
        async close() {
          try {
            // Leave the group tidy: our consumer goes when nothing is pending on it (XGROUP DELCONSUMER
            // would drop its pending entries otherwise).
            const pending = (await cmd.call("XPENDING", stream, group, "-", "+", "1", consumer)) as unknown[];
            if (pending.length === 0) await cmd.call("XGROUP", "DELCONSUMER", stream, group, consumer);
          } catch {
            // connection gone: the consumer stays until an operator removes it; nothing is lost
          }
          await Promise.allSettled([cmd.quit(), reader.quit()]);
          cmd.disconnect();
          reader.disconnect();
        },
      };
    },
  };
  return createSourceCore(broker, ctx);
}
