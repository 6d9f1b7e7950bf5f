// Every HTTP server of the platform answers errors through the one writer (src/shared/write-error.ts):
// a file that creates a node:http server or an Express app also uses writeError (directly, or through
// the node protocol's sendProtocolError), and no other file serialises the error body itself.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";

const SRC = resolve("src");
/** Not platform servers: the driver conformance suite's decoy listeners (raw TCP, never answer a client) and the event-source conformance suite's stand-in gateway (it answers the statuses a case asks for). */
const NOT_PLATFORM = ["sandbox/conformance.ts", "events/sources/conformance.ts"];
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else if (name.endsWith(".ts") && !name.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

/** Files that create an HTTP server and do not use the one error writer. */
function stragglers(files: ReadonlyArray<{ path: string; text: string }>): string[] {
  const out: string[] = [];
  for (const { path, text } of files) {
    const http = /from "node:http"/.test(text) && /\bcreateServer\(/.test(text);
    const app = /\bexpress\(\)/.test(text);
    if ((http || app) && !/\b(writeError|sendProtocolError)\(/.test(text)) out.push(`${relative(SRC, path)} creates a server without writeError`);
    if (!path.endsWith("write-error.ts") && /JSON\.stringify\([^)]*toErrorResponse\(/.test(text)) out.push(`${relative(SRC, path)} serialises an error body itself`);
  }
  return out;
}

test("the checker flags a server without the writer (so it can fail)", () => {
  assert.deepEqual(stragglers([
    { path: join(SRC, "x", "a.ts"), text: 'import { createServer } from "node:http";\nconst s = createServer((q, r) => r.end(JSON.stringify({ error: {} })));' },
    { path: join(SRC, "x", "b.ts"), text: 'const app = express();\nres.end(JSON.stringify(toErrorResponse(err).body));\nwriteError(res, err);' },
  ]), ["x/a.ts creates a server without writeError", "x/b.ts serialises an error body itself"]);
});

test("every HTTP server answers errors through src/shared/write-error.ts", () => {
  const files = filesUnder(SRC).filter((p) => !NOT_PLATFORM.includes(relative(SRC, p))).map((path) => ({ path, text: readFileSync(path, "utf8") }));
  const servers = files.filter((f) => (/from "node:http"/.test(f.text) && /\bcreateServer\(/.test(f.text)) || /\bexpress\(\)/.test(f.text)).map((f) => relative(SRC, f.path)).sort();
  // The servers there are (a new one must join the list, and use the writer).
  assert.deepEqual(servers, ["control/api.ts", "control/control-plane.ts", "gateway/gateway.ts", "node/node-agent.ts", "runtime/function-server.ts"]);
  assert.deepEqual(stragglers(files), []);
});
