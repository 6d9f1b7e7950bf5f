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
}
