import { once } from "node:events";
import { createServer, type AddressInfo } from "node:net";

/** A free TCP port on `host`, for servers that cannot bind port 0 themselves (HAProxy, brokers, PostgreSQL): bind 0, read it, release it. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const srv = createServer();
  srv.listen(0, host);
  await once(srv, "listening");
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}
