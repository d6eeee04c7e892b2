#!/usr/bin/env bash
# Installs the checker's two npm packages (and their dependencies) from package-lock.json into
# e2e/monitoring/node_modules, unless already there. Exit 75 when npm or the registry is missing.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is not installed (it installs @prometheus-io/lezer-promql)" >&2; exit 75; }
npm ci --no-audit --no-fund --loglevel=error || { echo "npm ci failed (registry unreachable?)" >&2; exit 75; }
