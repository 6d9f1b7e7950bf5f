/**
 * What the control plane's routes and pipelines ask of "the nodes": the fleet (src/control/node-fleet.ts)
 * behind this interface speaks the node protocol (src/shared/node-protocol.ts) to every connected node.
 * Nothing here is a node object: the only things that cross to a node are protocol messages.
 */
import type { NodeRecord, NodeState } from "../store/store";
import type { MemberView } from "./node-fleet";
import type { DiscoverRequest, DiscoverResult, FunctionNodeStatus, PrepareResult, VerifyResult, WireDeployment } from "../shared/node-protocol";

export { EMPTY_NODE_STATUS, type FunctionNodeStatus } from "../shared/node-protocol";

export interface NodeFleetApi {
  /**
   * The store changed what nodes should serve (a version switch, env, secrets, a deleted function, a
   * token): bumps the desired-state revision and pushes the new state to every connected node, waiting
   * for each (a node that misses it converges at its next resync). Resolves with the new revision.
   */
  publish(): Promise<number>;
  /** On one node (Docker: build + push the image). @throws StratusError BUILD_FAILED | UNAVAILABLE */
  prepare(deployment: WireDeployment): Promise<PrepareResult>;
  /** One instance started and stopped on a node. @throws StratusError FUNCTION_LOAD_FAILED | INSTANCE_START_FAILED | UNAVAILABLE */
  verify(deployment: WireDeployment): Promise<VerifyResult>;
  /** Sandboxed discovery of a published bundle on a node. @throws StratusError UNAVAILABLE */
  discover(request: DiscoverRequest): Promise<DiscoverResult>;
  /** Instance counts of a function, summed over the connected nodes (zeros when none serves it). */
  status(name: string): Promise<FunctionNodeStatus>;
  /** Registered nodes (state ready | draining | lost, load) plus a connected shared-secret node. */
  members(): Promise<MemberView[]>;
  /** Drains / undrains a registered node. @throws StratusError NOT_FOUND */
  setNodeState(id: number, state: NodeState): Promise<NodeRecord>;
  /** Removes a registered node: its credential stops working at once. @throws StratusError NOT_FOUND */
  removeNode(id: number): Promise<NodeRecord>;
}
