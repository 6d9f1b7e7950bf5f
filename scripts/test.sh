#!/usr/bin/env bash
# The full test suite, from a fresh Debian/Ubuntu machine with Node 20 (root or sudo):
# installs what the tests need (Debian packages, npm packages, services), then builds, type-checks,
# lints and runs every test file under src/ and test/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-deps.sh
# postgresql: test/store-postgres.test.ts starts a private server from its binaries (initdb + pg_ctl).
# postgresql-<major>-wal2json: the logical decoding plugin of the PostgreSQL table-change trigger
# (test/events-postgres-changes.test.ts), for the distribution's PostgreSQL (15 on Debian 12, 16 on Ubuntu 24.04).
# redis-server, nats-server, rabbitmq-server: test/event-sources.test.ts starts private brokers from their
# binaries (test/helpers/brokers.ts); the system services are never used.
ensure_debian_packages postgresql haproxy redis-server nats-server rabbitmq-server
pg_major="$(ls /usr/lib/postgresql | sort -n | tail -1)"
ensure_debian_packages "postgresql-${pg_major}-wal2json"
echo "==> npm ci"
npm ci --no-audit --no-fund
# Node 24 for instances (test/runtime-snapshot.test.ts; platform setting process.instanceNode), apart from
# node_modules: the package links a `node` into .bin, which would make every npm script run on it.
echo "==> npm ci --prefix tools/instance-node"
npm ci --prefix tools/instance-node --no-audit --no-fund

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
