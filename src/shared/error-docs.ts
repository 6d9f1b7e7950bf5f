/**
 * Renders docs/errors.md from the registry, so the docs list every code with its status and source.
 */
import { ERROR_CODES } from "./errors";

/** Markdown for docs/errors.md. */
export function renderErrorDocs(): string {
  const rows = Object.entries(ERROR_CODES).map(
    ([code, spec]) => `| \`${code}\` | ${spec.status} | ${spec.source} | ${spec.message} |`,
  );
  return [
    "# Error codes",
    "",
    "Every HTTP server of Stratus (gateway, API, internal node API, instance runtime, `stratus dev`) answers an",
    "error through one writer (`src/shared/write-error.ts`) as",
    "",
    "```json",
    '{ "error": { "code": "QUEUE_FULL", "message": "…", "requestId": "…" } }',
    "```",
    "",
    "with `content-type: application/json; charset=utf-8`, the header `x-stratus-error-source: platform` or",
    "`function` saying who failed and, when the request has one, `x-stratus-request-id` (a client's id is kept",
    "when it is `[A-Za-z0-9._:-]{1,128}`, else replaced by a new UUID: `src/shared/request-id.ts`). Codes are",
    "stable: match on `code`, never on the message. The CLI prints `CODE: message` and exits non-zero.",
    "",
    "Generated from `src/shared/errors.ts` by `node --import tsx scripts/gen-error-docs.mjs > docs/errors.md`.",
    "",
    "| code | HTTP status | source | default message |",
    "|---|---|---|---|",
    ...rows,
    "",
  ].join("\n");
}
