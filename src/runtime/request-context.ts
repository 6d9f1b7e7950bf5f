/**
 * The request context visible to user code's async continuations (AsyncLocalStorage): output capture
 * reads the request id from it to tag log lines. Its own module so discovery does not load Express.
 */
import { AsyncLocalStorage } from "node:async_hooks";

export interface RequestContext {
  readonly requestId: string;
}

/** The one store of request contexts of this process. */
export const requestContext = new AsyncLocalStorage<RequestContext>();
