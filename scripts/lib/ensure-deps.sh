# Sourced by scripts/up.sh and scripts/test.sh: installs the Debian packages the process driver needs
# (bubblewrap, iptables, util-linux's setpriv and nsenter, iproute2) when missing, a C compiler (gcc, libc6-dev:
# `npm run build` compiles the process driver's KSM launcher, src/sandbox/ksm/ksm-exec.c) when missing, plus any package named as an
# argument (scripts/test.sh adds `postgresql` and `haproxy`, which the PostgreSQL store and cluster tests run, and the
# brokers the trigger-source tests start: `redis-server`, `nats-server`, `rabbitmq-server`), then npm dependencies.
ensure_debian_packages() {
  local sudo="" pkgs=()
  if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
  command -v bwrap >/dev/null || pkgs+=(bubblewrap)
  command -v iptables >/dev/null || pkgs+=(iptables)
  command -v setpriv >/dev/null || pkgs+=(util-linux)
  command -v nsenter >/dev/null || pkgs+=(util-linux)
  [ -x /usr/sbin/ip ] || pkgs+=(iproute2)
  command -v cc >/dev/null || pkgs+=(gcc)
  pkgs+=(libc6-dev)
  pkgs+=("$@")
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

ensure_npm_packages() {
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "==> npm ci"
    npm ci --no-audit --no-fund
  fi
}
