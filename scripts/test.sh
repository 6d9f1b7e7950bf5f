#!/usr/bin/env bash
# The full test suite, from a fresh Debian/Ubuntu machine with Node 20:
# installs what the tests need (Debian packages, npm packages), then type-checks, lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

need_pkgs=()
command -v bwrap >/dev/null || need_pkgs+=(bubblewrap)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

echo "==> npm ci"
npm ci --no-audit --no-fund

echo "==> build"
npm run build

echo "==> typecheck"
npm run typecheck

echo "==> lint"
npm run lint

echo "==> services (dockerd, registry on 127.0.0.1:5000)"
bash scripts/services.sh

echo "==> tests"
node scripts/run-tests.mjs
