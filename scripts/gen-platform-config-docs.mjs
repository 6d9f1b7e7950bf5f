// Prints docs/configuration.md from the platform config schema (src/shared/platform-config.ts).
// `node --import tsx scripts/gen-platform-config-docs.mjs > docs/configuration.md`; test/docs.test.ts checks the file is current.
import { renderConfigurationDoc } from "../src/shared/configuration-doc.ts";
process.stdout.write(renderConfigurationDoc());
