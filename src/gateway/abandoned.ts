/**
 * What happens to an instance whose client disconnected mid-request (docs/gateway.md, "Client
 * disconnect"). The proxy aborted the upstream request, so the runtime saw the connection close and
 * aborted the handler's `req.signal`; the handler may still be running. The lease stays held (a second
 * request must never share an instance with `concurrency: 1`) while this asks the instance, over a fresh
 * connection, whether that request's handler finished within the grace period: reuse if it did, destroy
 * if it is still running (or the instance does not answer).
 */
import type { Dispatcher } from "undici";
import { HEADERS } from "../shared/protocol";
import type { Lease, ReleaseOutcome } from "./function-pool";

/** Extra time the gateway gives the runtime's own answer beyond the grace, ms (a loaded machine). */
const ANSWER_MARGIN_MS = 2_000;

/**
 * Resolves the outcome for the lease of an abandoned request: `reuse` when the runtime says the handler
 * of `requestId` finished within `graceMs` (ms), else `destroy`. Never rejects; bounded by
 * `graceMs + ANSWER_MARGIN_MS` (undici's headers/body timeouts).
 */
export function settleAbandoned(lease: Lease, requestId: string, graceMs: number): Promise<ReleaseOutcome> {
  const dispatcher: Dispatcher = lease.slot.dispatcher;
  return dispatcher.request({
    method: "GET",
    path: "/",
    headers: { [HEADERS.awaitRequest]: requestId, [HEADERS.awaitMs]: String(graceMs) },
    headersTimeout: graceMs + ANSWER_MARGIN_MS,
    bodyTimeout: ANSWER_MARGIN_MS,
  }).then(
    async (r): Promise<ReleaseOutcome> => {
      await r.body.dump();
      return r.statusCode === 204 && r.headers[HEADERS.requestState] === "finished" ? "reuse" : "destroy";
    },
    (): ReleaseOutcome => "destroy",
  ).catch((): ReleaseOutcome => "destroy");
}
