#!/usr/bin/env bash
# Builds the StateFun Java SDK app into e2e/java/target/statefun-java-app.jar with Maven (the SDK
# and Maven's plugins come from Maven Central into the default local repository, ~/.m2).
# Does nothing when the jar is newer than pom.xml and every source file.
#
# Exit status: 0 built or up to date; 75 when it cannot be built here for want of a tool or of
# the registry (the last line on stdout then says `missing: ...`); anything else: a real
# build failure (the compiler's output is on stderr).
set -uo pipefail
cd "$(dirname "$0")"
# One build at a time: parallel tests (and .ci/run) may all ask for it.
mkdir -p target && exec 9>target/.build.lock && { ! command -v flock >/dev/null || flock 9; }
jar=target/statefun-java-app.jar
for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (Java 17 and Maven build the StateFun Java SDK app)"; exit 75; }
done
if [ -f "$jar" ] && [ -z "$(find pom.xml src -newer "$jar" -print -quit)" ]; then
  echo "e2e/java: $jar is up to date" >&2
  exit 0
fi
start=$(date +%s%N)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# -B: no colours or progress bars in logs; -q keeps a warm build's output to errors.
if ! mvn -B -q ${MAVEN_ARGS_EXTRA:-} package >"$log" 2>&1; then
  cat "$log" >&2
  # Resolution problems (registry unreachable, artifact missing) are "cannot build here";
  # anything else is a failure of the app's own code or build file.
  if grep -qE "Could not (resolve|transfer)|Unknown host|Network is unreachable|Connection refused|could not be resolved" "$log"; then
    echo "missing: the Maven dependencies of e2e/java (org.apache.flink:statefun-sdk-java:3.3.0 and Maven's plugins) could not be fetched"
    exit 75
  fi
  exit 1
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "e2e/java: built $jar in $((ms / 1000)).$((ms % 1000 / 100)) s" >&2
