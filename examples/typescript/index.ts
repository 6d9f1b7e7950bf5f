// TypeScript with the typed helper: `stratus` resolves to the Stratus SDK at build time (nothing to install).
import { defineFunction } from "stratus";

interface Greeting {
  message: string;
  method: string;
  path: string;
}

export const greet = defineFunction({
  config: { timeout: 5_000, memory: 128 },
  handler: async (req): Promise<Greeting> => {
    const name = typeof req.query.name === "string" ? req.query.name : "world";
    return { message: `Hello, ${name}!`, method: req.method, path: req.path };
  },
});
