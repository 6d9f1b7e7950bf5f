// A table-change handler (docs/events.md "PostgreSQL table changes"): runs for every insert, update and
// delete on public.bids of *your* PostgreSQL, read through logical replication, so changes made while
// the trigger (or the whole platform) is down are delivered when it is back.
//
//   -- on the database, once (as a superuser):
//   CREATE ROLE stratus_cdc LOGIN REPLICATION PASSWORD '…';
//   GRANT SELECT ON public.bids TO stratus_cdc;
//   ALTER TABLE public.bids REPLICA IDENTITY FULL;   -- old rows in full on update/delete (default: the key)
//   -- postgresql.conf: wal_level = logical (restart), max_replication_slots ≥ 1 per trigger; wal2json installed
//
//   stratus secrets set onBid AUCTION_DB=postgres://stratus_cdc:…@db.example:5432/auction
//   stratus deploy examples/table-change-handler
//   stratus triggers ls onBid      # the slot, connected or why not
//
// Each change arrives as a CloudEvent in binary mode: ce-type io.stratus.postgres.insert|update|delete,
// ce-subject public.bids, ce-id "<transaction LSN>/<index>" (stable across redeliveries: deduplicate on
// it), JSON data { op, schema, table, new, old, lsn, committedAt }. Changes arrive one at a time in commit
// order; answer 2xx when done. A failure is retried (retryDelayMs backoff) up to maxAttempts, then the
// change goes to the dead-letter queue (`stratus dlq ls onBid`) and the next one is delivered.
const seen = new Set(); // in a real handler: a unique key in your own store

module.exports.onBid = {
  func: async (req, res) => {
    const id = req.get("ce-id");
    if (seen.has(id)) return res.sendStatus(204); // at-least-once: a redelivery after a restart
    const change = JSON.parse(req.rawBody.toString("utf8"));
    if (change.op === "insert") console.log(`new bid ${change.new.id}: ${change.new.amount}`);
    else if (change.op === "update") console.log(`bid ${change.new.id} changed from ${change.old.amount} to ${change.new.amount}`);
    else console.log(`bid ${change.old.id} withdrawn`);
    seen.add(id);
    res.sendStatus(204);
  },
  config: {
    timeout: 30_000,
    maxAttempts: 5,
    retryDelayMs: 2_000,
    triggers: [{ postgres: { connectionSecret: "AUCTION_DB", table: "public.bids", events: ["insert", "update", "delete"] } }],
  },
};
