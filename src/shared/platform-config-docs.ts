/**
 * Kept for imports from before the `control` merge: docs/configuration.md is rendered by
 * src/shared/configuration-doc.ts (one renderer, so the two cannot disagree).
 */
export { renderConfigurationDoc } from "./configuration-doc";
