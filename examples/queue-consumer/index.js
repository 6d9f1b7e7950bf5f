// Queue consumers (docs/events.md, "Queue triggers"): one function fed by a NATS JetStream stream, one by
// a Redis stream. Each message arrives as a CloudEvents 1.0 request in binary mode: the body as published,
// `ce-id` the broker's message id (the same on every redelivery), `ce-source` where it came from,
// `x-stratus-attempt` the broker's delivery count. Answer 2xx when done: only then is the message acked.
// Anything else (or a timeout, a crash) makes the broker redeliver it with backoff; after maxAttempts it
// lands in `stratus dlq ls <fn>`, from where `stratus dlq replay` runs it again.
//
// The broker URLs hold credentials, so they are secrets, named by `urlSecret`:
//   stratus deploy examples/queue-consumer
//   stratus secrets set orders NATS_URL=nats://user:password@nats.internal:4222
//   stratus secrets set clicks REDIS_URL=redis://:password@redis.internal:6379/0
//   stratus triggers ls orders        # connected, in flight, acked / retried / dead counts
const seen = new Set(); // in a real consumer: a unique key in your database

module.exports.orders = {
  func: async (req, res) => {
    const id = req.get("ce-id");
    if (seen.has(id)) return res.sendStatus(204); // at-least-once: a redelivery of a message already handled
    const order = JSON.parse(req.rawBody.toString("utf8"));
    console.log(`order ${order.id} from ${req.get("ce-subject")} (attempt ${req.get("x-stratus-attempt")})`);
    seen.add(id);
    res.sendStatus(204);
  },
  config: {
    timeout: 10_000,
    maxAttempts: 5,
    retryDelayMs: 2_000,
    triggers: [{ queue: { type: "nats", urlSecret: "NATS_URL", stream: "ORDERS", subject: "orders.created", concurrency: 4 } }],
  },
};

module.exports.clicks = {
  func: async (req, res) => {
    // A Redis stream entry's `data` field is the body (an entry without one arrives as JSON of its fields).
    console.log(`click ${req.get("ce-id")}: ${req.rawBody.toString("utf8")}`);
    res.sendStatus(204);
  },
  config: {
    triggers: [{ queue: { type: "redis", urlSecret: "REDIS_URL", stream: "clicks", consumer: "click-counters", batchSize: 50 } }],
  },
};
