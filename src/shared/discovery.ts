/**
 * Discovery: loading a built module inside a sandbox and listing its functions. The builder (control
 * side) asks for it; a node's driver (src/sandbox/) runs it; the node protocol carries it between them.
 */

/** What the function module exports, as reported by the runtime's discovery mode. */
export interface DiscoveredFunction {
  readonly name: string;
  readonly exportName: string;
  /** The raw, not yet validated `config` the module declares. */
  readonly config: unknown;
  /**
   * Set when the runtime found this function unusable (handler not a function, bad name, bad config).
   * Drivers pass it through rather than throw, so the builder can report every problem at once.
   */
  readonly error?: { readonly code: string; readonly message: string; readonly details?: unknown };
  /** Settings written in another platform's form that Stratus does not apply (the build log shows them). */
  readonly warnings?: readonly string[];
}

/** Input of a discovery run: load the module in a sandbox and list its functions. */
export interface DiscoverySpec {
  readonly artifactDir: string;
  readonly entry: string;
  /** Kill the discovery after this long (ms). */
  readonly timeoutMs: number;
}

/** What can run a discovery: a node's driver, or the control plane's client of a node (over the protocol). */
export interface Discoverer {
  /**
   * Loads a module inside a sandbox (never in the platform's own process) and lists its functions.
   * @throws StratusError FUNCTION_LOAD_FAILED (the message carries the module's error, with file:line when known)
   */
  discover(spec: DiscoverySpec): Promise<DiscoveredFunction[]>;
}
