/**
 * What the gateway tells an observer (src/observe/): one invocation record per request to a known
 * function, every output line of its instances, and lifecycle events. The gateway depends only on
 * this interface, never on the store. Every method is called synchronously on the hot path and must
 * return at once and never throw (buffer, don't write).
 */
import type { InstanceLogLine } from "./instance-output";
import type { InvocationRecord, PlatformEvent } from "./invocation";

export interface GatewayObserver {
  /** Called once per request, after its response ended (or the client left). */
  onInvocation(record: InvocationRecord): void;
  /** Every output line of an instance of `functionName`. */
  onInstanceLog(functionName: string, line: InstanceLogLine): void;
  /** Instance lifecycle and version switches. */
  onPlatformEvent(event: PlatformEvent): void;
}
