/**
 * What a node's `/readyz` answers — the one place that decides it, so the load balancer's view of a
 * node (HAProxy `option httpchk GET /readyz` with `http-check disable-on-404`) has one rule:
 *  - 404 while draining (`stratus node drain <id>`): HAProxy stops sending it new work, in-flight
 *    requests finish;
 *  - 503 before the node has applied a first desired state from its control plane;
 *  - 200 otherwise.
 * `/healthz` is liveness only (200 while the process serves).
 */
export interface NodeReadiness {
  readonly draining: boolean;
  /** A desired state was applied at least once. */
  readonly synced: boolean;
}

/** Status and JSON body of `/readyz`. */
export function readinessAnswer(r: NodeReadiness): { status: number; body: { ready: boolean; state: "ready" | "draining" | "starting" } } {
  if (r.draining) return { status: 404, body: { ready: false, state: "draining" } };
  if (!r.synced) return { status: 503, body: { ready: false, state: "starting" } };
  return { status: 200, body: { ready: true, state: "ready" } };
}
