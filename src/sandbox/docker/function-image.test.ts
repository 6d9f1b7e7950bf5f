import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { artifactDigest, functionDockerfile, repositoryOf, versionTag } from "./function-image";

test("versionTag keeps valid tags and maps the rest into the tag alphabet", () => {
  const cases: Array<[string, string]> = [
    ["1", "1"],
    ["v1.2.3", "v1.2.3"],
    ["2024-01-01T10:00", "2024-01-01T10-00"],
    [".hidden", "v.hidden"],
    ["-x", "v-x"],
    ["a/b c", "a-b-c"],
  ];
  for (const [input, want] of cases) assert.equal(versionTag(input), want, input);
  assert.equal(versionTag("x".repeat(300)).length, 128);
});

test("repositoryOf lowercases names without collisions", () => {
  assert.equal(repositoryOf("127.0.0.1:5000", "myFunction"), "127.0.0.1:5000/stratus/my_function");
  assert.equal(repositoryOf("127.0.0.1:5000", "my_function"), "127.0.0.1:5000/stratus/my__function");
});

test("functionDockerfile quotes user-given labels and sets a non-root user", () => {
  const text = functionDockerfile({ baseImage: "stratus-runtime:abc", functionName: "f", version: 'v"1', digest: "sha256:00" });
  assert.match(text, /^FROM stratus-runtime:abc\n/);
  assert.match(text, /COPY fn\/ \/srv\/function\//);
  assert.ok(text.includes('stratus.version="v\\"1"'), text);
  assert.match(text, /\nUSER 65534:65534\n/);
});

test("artifactDigest depends on contents, paths and modes, not on the directory's location", async () => {
  const make = (content: string) => {
    const d = mkdtempSync(join(tmpdir(), "stratus-digest-"));
    mkdirSync(join(d, "lib"));
    writeFileSync(join(d, "index.js"), content);
    writeFileSync(join(d, "lib", "a.js"), "a");
    return d;
  };
  const [a, b, c] = [make("x"), make("x"), make("y")];
  try {
    const da = await artifactDigest(a, "base:1");
    assert.equal(await artifactDigest(b, "base:1"), da);
    assert.notEqual(await artifactDigest(c, "base:1"), da);
    assert.notEqual(await artifactDigest(a, "base:2"), da, "a new base image is a new image");
    chmodSync(join(b, "index.js"), 0o755);
    assert.notEqual(await artifactDigest(b, "base:1"), da);
  } finally {
    for (const d of [a, b, c]) rmSync(d, { recursive: true, force: true });
  }
});
