#!/usr/bin/env bash
# Builds the StateFun Go SDK app into e2e/go/target/statefun-go-app (modules from the Go module
# proxy into the default module cache, pinned by go.sum). Does nothing when the binary is newer
# than go.mod, go.sum and every .go file.
#
# Exit status: 0 built or up to date; 75 when it cannot be built here for want of `go` or of
# the module proxy (the last line on stdout then says `missing: ...`); anything else: a real
# build failure (the compiler's output is on stderr).
set -uo pipefail
cd "$(dirname "$0")"
# One build at a time: parallel tests (and .ci/run) may all ask for it.
mkdir -p target && exec 9>target/.build.lock && { ! command -v flock >/dev/null || flock 9; }
bin=target/statefun-go-app
command -v go >/dev/null || { echo "missing: go (the Go toolchain builds the StateFun Go SDK app)"; exit 75; }
if [ -x "$bin" ] && [ -z "$(find . -path ./target -prune -o \( -name '*.go' -o -name go.mod -o -name go.sum \) -newer "$bin" -print)" ]; then
  echo "e2e/go: $bin is up to date" >&2
  exit 0
fi
start=$(date +%s%N)
# Fetching and compiling are separate steps so that a registry problem is told apart from a
# compile error.
if ! go mod download; then
  echo "missing: the Go modules of e2e/go (github.com/apache/flink-statefun/statefun-sdk-go/v3 v3.3.0) could not be fetched"
  exit 75
fi
GOFLAGS=-mod=readonly GOPROXY=off go build -o "$bin" . || exit 1
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "e2e/go: built $bin in $((ms / 1000)).$((ms % 1000 / 100)) s ($(go version | cut -d' ' -f3))" >&2
