// An npm dependency is bundled into the artifact at build time (run `npm ci` here first).
const ms = require("ms");

module.exports.duration = {
  func: async (req) => {
    const text = typeof req.query.d === "string" ? req.query.d : "1h";
    return { input: text, ms: ms(text) ?? null };
  },
};
