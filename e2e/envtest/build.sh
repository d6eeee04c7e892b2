#!/usr/bin/env bash
# Builds the real Kubernetes control plane the operator's envtest suite runs against —
# etcd, kube-apiserver and kube-controller-manager — from their Go modules, with `go` and the
# Go module proxy only. Binaries are cached under target/envtest/<kubernetes version>/; a
# binary that is there and reports the wanted version is not built again. Go's own module
# and build caches stay where `go env GOMODCACHE GOCACHE` says (outside the clone), so a
# fresh clone on a machine that built them before only links.
#
# k8s.io/kubernetes is not meant to be used as a module: its go.mod requires its `k8s.io/*`
# staging modules at v0.0.0 and points them at ./staging with `replace`, which a dependent
# module ignores. So the binaries are built in a throw-away module (target/envtest/src/) that
# requires k8s.io/kubernetes and replaces every staging module with its published v0.X.Y of
# the same release (v1.37.2 -> v0.37.2), the list read from Kubernetes' own go.mod. etcd is
# built in a module of its own, so that its dependency versions are its own.
#
# Usage: e2e/envtest/build.sh [OUT_ROOT]   (default: <repo>/target/envtest)
# Progress goes to stderr; stdout is one line, the directory holding the binaries.
set -euo pipefail
KUBE_VERSION="${SPINDLE_KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${SPINDLE_ETCD_VERSION:-v3.7.3}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
root="${1:-$repo/target/envtest}"
out="$root/$KUBE_VERSION"
src="$root/src"
log="$root/build.log"
mkdir -p "$out" "$src"
say() { echo "envtest-build: $*" >&2; }

# Whether $1 exists, runs, and prints $2 in its version output. (Not `| grep -q`: grep's
# early exit would kill the binary with SIGPIPE and pipefail would call that a miss.)
have() {
  local v
  [ -x "$1" ] && v="$("$1" --version 2>/dev/null)" && [[ "$v" == *"$2"* ]]
}

kube_bins=(kube-apiserver kube-controller-manager)
missing=()
for b in "${kube_bins[@]}"; do
  if have "$out/$b" "$KUBE_VERSION"; then say "$b $KUBE_VERSION cached at $out/$b"; else missing+=("$b"); fi
done
need_etcd=1
if have "$out/etcd" "${ETCD_VERSION#v}"; then say "etcd $ETCD_VERSION cached at $out/etcd"; need_etcd=0; fi
if [ "$need_etcd" = 0 ] && [ "${#missing[@]}" = 0 ]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { say "go is not installed"; exit 1; }
# The Go the machine has, never one fetched behind our back; static binaries, no C.
export GOTOOLCHAIN=local CGO_ENABLED=0
: > "$log"
# Runs a go command with its chatter in the log; on failure, the log's end is shown.
quiet() {
  if ! "$@" >>"$log" 2>&1; then
    say "failed: $* (end of $log:)"
    tail -n 20 "$log" >&2
    exit 1
  fi
}
total_start=$(date +%s)
built=()

if [ "$need_etcd" = 1 ]; then
  start=$(date +%s)
  mod="$src/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  printf 'module spindle.dev/envtest/etcd\n\ngo 1.26\n' > "$mod/go.mod"
  say "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3) with $(go version | cut -d' ' -f3)"
  (cd "$mod" && quiet go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  (cd "$mod" && quiet go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$out/etcd.tmp" "$out/etcd"
  secs=$(( $(date +%s) - start ))
  built+=("etcd ${secs}s")
  say "built etcd $ETCD_VERSION in ${secs}s"
fi

if [ "${#missing[@]}" -gt 0 ]; then
  mod="$src/kubernetes-$KUBE_VERSION"
  mkdir -p "$mod"
  start=$(date +%s)
  staging_version="v0.${KUBE_VERSION#v1.}"
  kube_mod="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [ -f "$kube_mod" ] || { say "cannot read the go.mod of k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
  {
    printf 'module spindle.dev/envtest/kubernetes\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$kube_mod"
    printf ')\n'
  } > "$mod/go.mod"
  say "building ${missing[*]} $KUBE_VERSION (k8s.io/kubernetes, $(grep -c ' => ' "$mod/go.mod") staging modules replaced by their $staging_version) with $(go version | cut -d' ' -f3)"
  for b in "${missing[@]}"; do
    (cd "$mod" && quiet go get "k8s.io/kubernetes/cmd/$b@$KUBE_VERSION")
  done
  # The version kube-apiserver reports (/version, kubectl's skew warning) and that `have`
  # checks; a module build leaves it at v0.0.0-master otherwise.
  minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  for b in "${missing[@]}"; do
    bstart=$(date +%s)
    (cd "$mod" && quiet go build -trimpath -ldflags "$ldflags" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$out/$b.tmp" "$out/$b"
    secs=$(( $(date +%s) - bstart ))
    built+=("$b ${secs}s")
    say "built $b $KUBE_VERSION in ${secs}s"
  done
fi

say "built ${built[*]} ($(( $(date +%s) - total_start ))s in all, load $(cut -d' ' -f1-3 /proc/loadavg)); go module cache $(du -sh "$(go env GOMODCACHE)" 2>/dev/null | cut -f1), go build cache $(du -sh "$(go env GOCACHE)" 2>/dev/null | cut -f1), binaries $(du -sh "$out" | cut -f1)"
echo "$out"
