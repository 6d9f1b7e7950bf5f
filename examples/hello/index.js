// The original Stratus form: each export is a function, served at /fn/<exportName>/.
module.exports.myFunction = { func: async (req, res) => res.send("Hello"), config: { timeout: 10_000 } };

// A second function in the same project; it returns a value instead of using `res`.
let calls = 0;
module.exports.counter = {
  handler: async () => ({ calls: ++calls }),
};
