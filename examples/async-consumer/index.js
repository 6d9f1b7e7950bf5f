// An async consumer (docs/events.md). Enqueue work without waiting for it:
//   stratus invoke resize --async --data '{"photo":"p-42.jpg"}' --idempotency-key p-42
//   curl -X POST http://127.0.0.1:8080/fn/resize -H 'x-stratus-invocation-type: async' -d '{"photo":"p-42.jpg"}'
// then read the outcome at the status URL of the 202 (`stratus invocation <id>`). A non-2xx answer, a
// timeout or a crash is retried (maxAttempts, exponential backoff); what keeps failing lands in the DLQ:
//   stratus dlq ls resize; stratus dlq show resize <id>; stratus dlq replay resize <id>
module.exports.resize = {
  func: async (req, res) => {
    const id = req.get("x-stratus-invocation-id"); // the same on every attempt: a deduplication key
    const attempt = Number(req.get("x-stratus-attempt") ?? 1);
    const { photo } = req.body ?? {};
    if (typeof photo !== "string") return res.status(400).json({ error: "photo is required" }); // retried, then dead-lettered
    console.log(`resizing ${photo} (invocation ${id}, attempt ${attempt})`);
    res.json({ photo, sizes: [320, 640, 1280] });
  },
  config: { timeout: 30_000, asyncConcurrency: 4, maxInstances: 8, maxAttempts: 3, retryDelayMs: 2000, maxEventAgeS: 3600 },
};
