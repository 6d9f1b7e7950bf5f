/**
 * The control plane's client of one node's protocol API (src/shared/node-protocol.ts): `url` is
 * `http(s)://host:port` or `unix:<socket>`, `key` the control plane's bearer key for the link
 * (deriveLinkKeys(secret).control). Errors from the node keep their code; an unreachable node is UNAVAILABLE.
 */
import { createLinkClient } from "../shared/node-link";
import { NODE_PROTOCOL_PREFIX as P, type NodeApi } from "../shared/node-protocol";

/** A NodeApi over HTTP, plus `close()` for its connection pool. */
export function createNodeClient(url: string, key: string): NodeApi & { close(): Promise<void> } {
  const c = createLinkClient(url, key, "node agent");
  return {
    applyState: (state, options = {}) => c.call("PUT", `${P}/desired-state`, state, options),
    prepare: (d) => c.call("POST", `${P}/prepare`, d),
    verify: (d) => c.call("POST", `${P}/verify`, d),
    discover: (r) => c.call("POST", `${P}/discover`, r),
    pruneImages: (r) => c.call("POST", `${P}/images/prune`, r),
    status: (name) => c.call("GET", `${P}/functions/${encodeURIComponent(name)}/status`),
    health: () => c.call("GET", `${P}/health`),
    setNodeState: (state) => c.call("PUT", `${P}/node-state`, state),
    close: () => c.close(),
  };
}
