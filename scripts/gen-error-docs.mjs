// Prints docs/errors.md from the error registry (src/shared/errors.ts).
// `node --import tsx scripts/gen-error-docs.mjs > docs/errors.md`; a unit test checks the file is current.
import { renderErrorDocs } from "../src/shared/error-docs.ts";
process.stdout.write(renderErrorDocs());
