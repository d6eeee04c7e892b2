#!/usr/bin/env bash
# Creates (or reuses) the Python venv with the official StateFun SDK (for the compatibility
# tests), kubernetes-validate (for the operator's manifests) and moto's S3 server (for the
# checkpoint chaos test). Usage: setup-venv.sh VENV_DIR
set -euo pipefail
venv=${1:?usage: setup-venv.sh VENV_DIR}
py=${PYTHON:-python3}
if "$venv/bin/python" -c 'import statefun, aiohttp, kubernetes_validate, moto.server' 2>/dev/null; then
  exit 0
fi
echo "setting up $venv: apache-flink-statefun 3.3.0 (protobuf 3.20.x), aiohttp, kubernetes-validate 1.37.0, moto[server] 5.2.5" >&2
"$py" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "apache-flink-statefun==3.3.0" "protobuf>=3.20,<3.21" "aiohttp>=3.8,<4" "kubernetes-validate==1.37.0" \
  "moto[server]==5.2.5"
"$venv/bin/python" -c 'import statefun, aiohttp, kubernetes_validate, moto.server'
