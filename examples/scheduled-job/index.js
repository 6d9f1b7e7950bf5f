// A scheduled job (docs/events.md): runs every day at 03:30 Berlin time and every 15 minutes.
// Each slot fires once across the platform; a failure is retried with backoff, then dead-lettered
// (`stratus dlq ls nightly`). The CloudEvents id is stable per slot: use it to make the work idempotent.
const done = new Set(); // in a real job: a unique key in your database

module.exports.nightly = {
  func: async (req, res) => {
    const slot = req.get("ce-id"); // "<trigger id>@<slot ISO time>"
    if (done.has(slot)) return res.sendStatus(204); // at-least-once: a retry of a slot that already ran
    console.log(`cleaning up for slot ${req.get("ce-time")} (attempt ${req.get("x-stratus-attempt")})`);
    done.add(slot);
    res.sendStatus(204);
  },
  config: {
    timeout: 60_000,
    triggers: [
      { schedule: "30 3 * * *", timezone: "Europe/Berlin" },
      { rate: "15 minutes", catchUp: "none" },
    ],
    maxAttempts: 5,
    retryDelayMs: 30_000,
  },
};
