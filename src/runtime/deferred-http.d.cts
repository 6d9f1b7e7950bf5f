/** See deferred-http.cjs: loads the real node:http and splices it under the placeholders. Idempotent. */
export function activate(): void;
