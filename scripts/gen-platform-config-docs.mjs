// Prints docs/configuration.md from the platform config schema (src/shared/platform-config.ts).
// `node --import tsx scripts/gen-platform-config-docs.mjs > docs/configuration.md`; a unit test checks it is current.
import { renderConfigurationDoc } from "../src/shared/platform-config-docs.ts";
process.stdout.write(renderConfigurationDoc());
