#!/usr/bin/env bash
# Installs the StateFun JavaScript SDK (npm apache-flink-statefun 3.3.0 and its one dependency,
# google-protobuf, pinned by package-lock.json) into e2e/js/node_modules with `npm ci`. Does
# nothing when node_modules is newer than package.json and package-lock.json.
#
# Exit status: 0 installed or up to date; 75 when it cannot be installed here for want of
# node/npm or of the registry (the last line on stdout then says `missing: ...`); anything
# else: a real failure (e.g. a lock file out of step with package.json).
set -uo pipefail
cd "$(dirname "$0")"
# One build at a time: parallel tests (and .ci/run) may all ask for it.
exec 9>.build.lock && { ! command -v flock >/dev/null || flock 9; }
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (Node.js runs the StateFun JavaScript SDK apps)"; exit 75; }
done
stamp=node_modules/.package-lock.json
if [ -f "$stamp" ] && [ -z "$(find package.json package-lock.json -newer "$stamp" -print)" ]; then
  echo "e2e/js: node_modules is up to date" >&2
  exit 0
fi
start=$(date +%s%N)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! npm ci --no-audit --no-fund --loglevel=error >"$log" 2>&1; then
  cat "$log" >&2
  # A lock file that does not match package.json is this project's mistake, not the machine's.
  grep -q "EUSAGE" "$log" && exit 1
  echo "missing: the npm packages of e2e/js (apache-flink-statefun 3.3.0) could not be installed"
  exit 75
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "e2e/js: installed apache-flink-statefun $(node -p 'require("apache-flink-statefun/package.json").version') into e2e/js/node_modules in $((ms / 1000)).$((ms % 1000 / 100)) s (node $(node --version))" >&2
