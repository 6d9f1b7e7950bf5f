#!/usr/bin/env bash
# Starts Stratus on this machine with its embedded defaults (no external service):
# installs what the process driver needs, builds, then runs `stratus up` (flags are passed through).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-deps.sh
ensure_debian_packages
ensure_npm_packages
npm run build --silent
exec node bin/stratus.js up "$@"
