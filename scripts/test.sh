#!/usr/bin/env bash
# The test command: installs everything the suite needs on Debian 12 (as
# root), builds poprelay (npm ci compiles the addon and the TypeScript) and
# runs every test. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
npm ci --no-audit --no-fund
npm test
