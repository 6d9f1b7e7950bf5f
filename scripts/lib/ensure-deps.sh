# Sourced by scripts/up.sh and scripts/test.sh: installs the Debian packages the process driver needs
# (bubblewrap, iptables, util-linux's setpriv) and the cluster's load balancer (haproxy 2.6, used by
# `stratus lb`, test/lb-haproxy.test.ts and bench/cluster.ts) when missing, then npm dependencies.
ensure_debian_packages() {
  local sudo="" pkgs=()
  if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
  command -v bwrap >/dev/null || pkgs+=(bubblewrap)
  command -v iptables >/dev/null || pkgs+=(iptables)
  command -v setpriv >/dev/null || pkgs+=(util-linux)
  # /usr/sbin may be missing from a non-root PATH: ask dpkg, not the shell.
  dpkg -s haproxy >/dev/null 2>&1 || pkgs+=(haproxy)
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
