/**
 * Versioned schema of the PostgreSQL store. Index + 1 is the schema version, recorded in
 * `schema_migrations`; `migrate` applies the missing ones at start, each in its own transaction,
 * under an advisory lock so two control planes starting together do not both apply one.
 * Never edit a released entry: append.
 *
 * Times are epoch milliseconds (`bigint`), as in the SQLite store, so both implementations return the
 * same records. `config` and `result` are `json` (not `jsonb`), which keeps the text — and so the key
 * order — exactly as written.
 *
 * Telemetry (`logs`, `invocations`) is range-partitioned on `ts` by day (partitions are created by the
 * store as rows arrive and a few days ahead; see postgres-store.ts), so retention drops whole
 * partitions instead of deleting rows. No foreign keys there: telemetry is keyed by function name and
 * outlives the function (see the Store contract).
 */
import type pg from "pg";
import { StratusError } from "../../shared/errors";

export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE functions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    name_lower text NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    active_version text,
    activated_at bigint
  );
  CREATE TABLE versions (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    function_id bigint NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    version text NOT NULL,
    digest text NOT NULL,
    entry text NOT NULL,
    export_name text NOT NULL,
    config json NOT NULL,
    source_digest text NOT NULL,
    status text NOT NULL,
    image text,
    created_at bigint NOT NULL,
    UNIQUE (function_id, version)
  );
  CREATE TABLE env_vars (
    function_id bigint NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    name text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (function_id, name)
  );
  CREATE TABLE secrets (
    function_id bigint NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    name text NOT NULL,
    ciphertext text NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (function_id, name)
  );
  CREATE TABLE tokens (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    hash text NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
  );
  CREATE TABLE builds (
    id text PRIMARY KEY,
    status text NOT NULL,
    source_digest text,
    error_code text,
    error_message text,
    result json,
    -- Lines appended so far: appenders take their line numbers from it under the row lock.
    log_lines integer NOT NULL DEFAULT 0,
    created_at bigint NOT NULL,
    finished_at bigint
  );
  CREATE TABLE build_logs (
    build_id text NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    seq integer NOT NULL,
    line text NOT NULL,
    PRIMARY KEY (build_id, seq)
  );

  CREATE SEQUENCE logs_seq;
  CREATE TABLE logs (
    seq bigint NOT NULL DEFAULT nextval('logs_seq'),
    function_name text NOT NULL,
    ts bigint NOT NULL,
    level smallint NOT NULL,
    source text NOT NULL,
    stream text,
    request_id text,
    instance_id text,
    message text NOT NULL
  ) PARTITION BY RANGE (ts);
  CREATE INDEX logs_function ON logs (function_name, seq);
  CREATE INDEX logs_seq_idx ON logs (seq);
  CREATE INDEX logs_request ON logs (request_id) WHERE request_id IS NOT NULL;

  CREATE SEQUENCE invocations_seq;
  CREATE TABLE invocations (
    seq bigint NOT NULL DEFAULT nextval('invocations_seq'),
    request_id text NOT NULL,
    function_name text NOT NULL,
    version text NOT NULL,
    instance_id text,
    node_id text NOT NULL,
    cold boolean NOT NULL,
    queue_ms double precision NOT NULL,
    start_ms double precision NOT NULL,
    init_ms double precision,
    handler_ms double precision NOT NULL,
    total_ms double precision NOT NULL,
    status integer NOT NULL,
    error_code text,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    peak_memory_bytes bigint,
    traceparent text NOT NULL,
    ts bigint NOT NULL
  ) PARTITION BY RANGE (ts);
  CREATE INDEX invocations_function ON invocations (function_name, seq);
  CREATE INDEX invocations_seq_idx ON invocations (seq);
  CREATE INDEX invocations_request ON invocations (request_id);

  CREATE TABLE error_groups (
    function_name text NOT NULL,
    fingerprint text NOT NULL,
    code text NOT NULL,
    message_shape text NOT NULL,
    top_frame text,
    count bigint NOT NULL,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    sample_request_id text NOT NULL,
    PRIMARY KEY (function_name, fingerprint)
  );
  CREATE INDEX error_groups_seen ON error_groups (function_name, last_seen);
  `,
  `
  CREATE TABLE join_tokens (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    hash text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    revoked_at bigint
  );
  -- id is chosen (lowest free, see registerNode), not generated: it is the HAProxy server id.
  CREATE TABLE nodes (
    id integer PRIMARY KEY,
    name text NOT NULL UNIQUE,
    url text NOT NULL,
    driver text NOT NULL,
    state text NOT NULL DEFAULT 'ready',
    created_at bigint NOT NULL,
    last_seen bigint,
    load json,
    credential_id text NOT NULL UNIQUE,
    credential_hash text NOT NULL,
    removed_at bigint
  );
  CREATE TABLE cluster_state (
    key text PRIMARY KEY,
    value bigint NOT NULL
  );
  INSERT INTO cluster_state (key, value) VALUES ('config_rev', 0);
  `,
  // The event model: which trigger, event and attempt an invocation was (null for other requests). On the
  // partitioned parent, so every partition (existing and future) gets the columns.
  `
  ALTER TABLE invocations ADD COLUMN trigger_id text;
  ALTER TABLE invocations ADD COLUMN event_id text;
  ALTER TABLE invocations ADD COLUMN attempt integer;
  CREATE INDEX invocations_event ON invocations (function_name, event_id) WHERE event_id IS NOT NULL;
  `,
];

/** Arbitrary constant key of the advisory lock that serialises migrations ("strat" in ASCII). */
const MIGRATION_LOCK = 0x7374726174;

/**
 * Applies the missing migrations.
 * @throws StratusError INTERNAL when the database's schema is newer than this code.
 */
export async function migrate(client: pg.ClientBase): Promise<void> {
  await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
  try {
    await client.query("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)");
    const { rows } = await client.query<{ v: number | null }>("SELECT MAX(version) AS v FROM schema_migrations");
    const current = rows[0]?.v ?? 0;
    if (current > MIGRATIONS.length) {
      throw new StratusError("INTERNAL", `The database schema (version ${current}) is newer than this Stratus (knows ${MIGRATIONS.length}); upgrade Stratus`);
    }
    for (let v = current + 1; v <= MIGRATIONS.length; v++) {
      await client.query("BEGIN");
      try {
        await client.query(MIGRATIONS[v - 1]!);
        await client.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", [v, Date.now()]);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK");
        throw err;
      }
    }
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]);
  }
}
