#!/usr/bin/env bash
# Starts the services the Docker driver and its tests need, on a fresh Debian machine or on one where
# they already run (idempotent):
#  - Debian's docker.io (dockerd) and docker-registry, installed when missing;
#  - dockerd, started in the background when its API does not answer (log: $STRATUS_SERVICES_DIR/dockerd.log);
#  - a registry on $STRATUS_REGISTRY (default 127.0.0.1:5000), storage on disk under $STRATUS_SERVICES_DIR.
# There is no internet registry here: every image is built locally (see src/sandbox/docker/base-image.ts).
#
# Env: STRATUS_SERVICES_DIR (default /var/lib/stratus-services), STRATUS_REGISTRY (default 127.0.0.1:5000),
#      STRATUS_SERVICES_WAIT_S (bounded wait for each service, default 60).
set -euo pipefail

DIR="${STRATUS_SERVICES_DIR:-/var/lib/stratus-services}"
REGISTRY="${STRATUS_REGISTRY:-127.0.0.1:5000}"
WAIT_S="${STRATUS_SERVICES_WAIT_S:-60}"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
mkdir -p "$DIR"

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v docker-registry >/dev/null || need_pkgs+=(docker-registry)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v curl >/dev/null || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> services: installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  # Without an init system the packages' own service start fails harmlessly; this script starts the daemons.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# The engine's API over its socket, without depending on which docker CLI is first on PATH.
docker_up() { curl -fsS --max-time 2 --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; }
registry_up() { curl -fsS --max-time 2 "http://$REGISTRY/v2/" >/dev/null 2>&1; }

wait_for() { # name, check function
  local deadline=$((SECONDS + WAIT_S))
  until "$2"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "services: $1 did not answer within ${WAIT_S}s; see $DIR/$1.log" >&2
      tail -n 20 "$DIR/$1.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

# A daemon that is still starting or stopping holds the pid file: wait until it answers or is gone.
deadline=$((SECONDS + WAIT_S))
while [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null && ! docker_up; do
  if [ $SECONDS -ge $deadline ]; then echo "services: dockerd (pid $(cat /var/run/docker.pid)) neither answers nor exits" >&2; exit 1; fi
  sleep 0.2
done
if docker_up; then
  echo "==> services: dockerd answers"
else
  echo "==> services: starting dockerd (log: $DIR/dockerd.log)"
  # A stale pid file from a killed daemon makes dockerd refuse to start.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then $SUDO rm -f /var/run/docker.pid; fi
  # setsid: the daemon outlives this script and does not get the terminal's signals.
  $SUDO setsid nohup dockerd >"$DIR/dockerd.log" 2>&1 </dev/null &
  wait_for dockerd docker_up
fi

if registry_up; then
  echo "==> services: registry already answers on $REGISTRY"
else
  echo "==> services: starting docker-registry on $REGISTRY (data: $DIR/registry)"
  mkdir -p "$DIR/registry"
  cat >"$DIR/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  setsid nohup docker-registry serve "$DIR/registry.yml" >"$DIR/registry.log" 2>&1 </dev/null &
  wait_for registry registry_up
fi
echo "==> services: dockerd and registry ($REGISTRY) ready"
