#!/usr/bin/env bash
# The full test suite, from a fresh Debian/Ubuntu machine with Node 20 (root or sudo):
# installs what the tests need (Debian packages, npm packages, services), then builds, type-checks,
# lints and runs every test file under src/ and test/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-deps.sh
# postgresql: test/store-postgres.test.ts starts a private server from its binaries (initdb + pg_ctl).
# postgresql-15-wal2json: the logical decoding plugin of the PostgreSQL table-change trigger
# (test/events-postgres-changes.test.ts; Debian 12's postgresql is 15).
# redis-server, nats-server, rabbitmq-server: test/event-sources.test.ts starts private brokers from their
# binaries (test/helpers/brokers.ts); the system services are never used.
ensure_debian_packages postgresql postgresql-15-wal2json haproxy redis-server nats-server rabbitmq-server
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
