// Generated docs are current: docs/configuration.md (platform config) and docs/errors.md (error registry).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { renderConfigurationDoc } from "../src/shared/configuration-doc";
import { PLATFORM_CONFIG_FIELDS } from "../src/shared/platform-config";
import { ERROR_CODES } from "../src/shared/errors";

test("docs/configuration.md is generated from the current schema", async () => {
  const doc = await readFile("docs/configuration.md", "utf8");
  assert.equal(doc, renderConfigurationDoc(), "run: node --import tsx scripts/gen-platform-config-docs.mjs > docs/configuration.md");
  for (const f of PLATFORM_CONFIG_FIELDS) assert.ok(doc.includes(f.env), f.env);
});

test("docs/errors.md lists every code, and docs/api.md and docs/cli.md exist", async () => {
  const errors = await readFile("docs/errors.md", "utf8");
  for (const code of Object.keys(ERROR_CODES)) assert.ok(errors.includes(code), code);
  const api = await readFile("docs/api.md", "utf8");
  for (const route of ["/api/v1/deployments", "/api/v1/functions/{name}/rollback", "/api/v1/tokens/{id}", "/internal/v1/verify"]) assert.ok(api.includes(route), route);
  const cli = await readFile("docs/cli.md", "utf8");
  for (const cmd of ["stratus up", "stratus deploy", "stratus invoke", "stratus rollback", "stratus secrets", "stratus token", "stratus init"]) assert.ok(cli.includes(cmd), cmd);
});
