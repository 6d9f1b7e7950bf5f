// The job queue conformance suite against a real PostgreSQL server this test starts
// (test/helpers/postgres-server.ts), one fresh database per case.
import { after, before } from "node:test";
import { runQueueConformance } from "../src/events/conformance";
import { openPostgresQueue } from "../src/events/postgres/postgres-queue";
import { startPostgres, type PostgresServer } from "./helpers/postgres-server";

let server: PostgresServer;
before(async () => {
  server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

let n = 0;
runQueueConformance("postgres", async (options) => {
  const name = `queue_${process.pid}_${++n}`;
  const url = await server.createDatabase(name);
  return {
    queue: await openPostgresQueue({ connectionString: url, ...options }),
    open: (o) => openPostgresQueue({ connectionString: url, ...o }),
    cleanup: () => server.dropDatabase(name),
  };
});
