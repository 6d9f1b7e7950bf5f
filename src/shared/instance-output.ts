/**
 * Output of a function instance, line by line: what a driver (src/sandbox/) produces, the gateway
 * passes to its observer, the node ships over the protocol and the observer (src/observe/) stores.
 */

/** One line of output from an instance. `requestId` is set when the runtime tagged it. */
export interface InstanceLogLine {
  readonly ts: number;
  readonly stream: "stdout" | "stderr";
  readonly level: string;
  readonly requestId?: string;
  readonly message: string;
  readonly instanceId: string;
  /**
   * Set on the platform's marker line for output the per-instance rate limit dropped
   * (src/sandbox/output-lines.ts, OutputLimiter): how much was dropped since the previous marker.
   */
  readonly dropped?: { readonly lines: number; readonly bytes: number };
}
