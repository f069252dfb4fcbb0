#!/usr/bin/env bash
# The demo: a real Dovecot login makes sendmail allow relaying, and the sweep
# takes it back. As root on Debian 12: installs the packages it needs and
# builds poprelay (step 1), then runs scripts/demo.ts (steps 2 to 8), which
# installs poprelay with scripts/install.sh into a temporary tree and drives
# Dovecot, a POP3 client and sendmail with the tests' own code; it removes
# the tree and the private Dovecot afterwards.
# --cluster (npm run demo:cluster): after the same set-up, scripts/demo-cluster.ts
# shows two hosts sharing one relay set in an engine.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp /tmp/poprelay-demo-log.XXXXXX)

quietly() {
  if ! "$@" >>"$log" 2>&1; then
    echo "      failed: $*; the last lines of $log:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
}

demo=demo
case "${1:-}" in
  '') echo "poprelay demo: a real Dovecot login makes sendmail allow relaying, and the sweep takes it back." ;;
  --cluster) demo='demo-cluster' ;;
  *) echo "usage: scripts/demo.sh [--cluster]" >&2; exit 2 ;;
esac
[[ $(id -u) -eq 0 ]] || { echo "run the demo as root (it installs packages and starts Dovecot)" >&2; exit 1; }

printf '\n[set-up] %s\n' "Installing Debian packages (Dovecot, sendmail, libdb, redis-tools) and building poprelay (npm ci)"
quietly bash scripts/install-deps.sh --demo
quietly npm ci --no-audit --no-fund
# Node 20 runs no TypeScript: esbuild (a devDependency) makes the demo one
# module, beside the build, that imports execa from node_modules.
quietly npx esbuild "scripts/$demo.ts" --bundle --platform=node --format=esm --target=node20 --packages=external \
  --log-level=warning --outfile="build/demo/$demo.mjs"
echo "      done (details in $log)"
exec node "build/demo/$demo.mjs"
