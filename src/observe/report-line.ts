/** The one-line summary of an invocation appended to the function's log stream (like Lambda's REPORT). */
import type { InvocationRecord } from "../shared/invocation";

const MB = 1024 * 1024;

/**
 * `REPORT RequestId: r Version: v Instance: i Status: 200 Duration: 3.21 ms Queue: 0.00 ms
 * Start: 52.3 ms (cold) Total: 56.1 ms Max Memory Used: 45 MB In: 12 B Out: 2 B [Error: CODE] [Attempt: 2]
 * [Trigger: fn#0:ab12cd34] [Event: <ce-id>]`.
 * Durations in ms with 2 decimals; memory in MiB, rounded up like Lambda's.
 */
export function formatReportLine(r: InvocationRecord): string {
  const parts = [
    `REPORT RequestId: ${r.requestId}`,
    `Version: ${r.version}`,
    `Instance: ${r.instanceId ?? "-"}`,
    `Status: ${r.status === 0 ? "-" : r.status}`,
    `Duration: ${r.handlerMs.toFixed(2)} ms`,
    `Queue: ${r.queueMs.toFixed(2)} ms`,
  ];
  if (r.coldStart) parts.push(`Start: ${r.startMs.toFixed(2)} ms (cold)`);
  if (r.initMs !== null) parts.push(`Init: ${r.initMs.toFixed(2)} ms`);
  parts.push(`Total: ${r.totalMs.toFixed(2)} ms`);
  parts.push(`Max Memory Used: ${r.peakMemoryBytes === null ? "-" : `${Math.ceil(r.peakMemoryBytes / MB)} MB`}`);
  parts.push(`In: ${r.bytesIn} B`, `Out: ${r.bytesOut} B`);
  if (r.errorCode !== null) parts.push(`Error: ${r.errorCode}`);
  // The platform's async and event dispatches only (InvocationRecord): which attempt, trigger and event.
  if (r.attempt !== null && r.attempt !== undefined) parts.push(`Attempt: ${r.attempt}`);
  if (r.trigger !== null && r.trigger !== undefined) parts.push(`Trigger: ${r.trigger}`);
  if (r.eventId !== null && r.eventId !== undefined) parts.push(`Event: ${r.eventId}`);
  return parts.join("\t");
}
