#!/usr/bin/env bash
# Builds the StateFun launcher (src/, one class) with Maven and resolves what it runs on —
# statefun-flink-distribution 3.3.0 and Flink 1.16.2's module jars, all from the Maven registry,
# through a local repository under target/m2 — into ROOT/3.3.0/ (default ROOT: target/statefun):
# libs/ (the classpath) and statefun-launcher.jar. Idempotent: a complete build is kept.
# Prints progress on stderr and the directory on stdout. Usage: fetch.sh [ROOT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
root="${1:-$repo_root/target/statefun}"
dest="$root/3.3.0"
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
stamp="$(cat "$here/pom.xml" "$here"/src/main/java/dev/spindle/statefun/*.java | sha256sum | cut -c1-16)"
if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$stamp" ]; then
  echo "$dest"
  exit 0
fi
command -v java >/dev/null || { echo "fetch.sh: java is needed to run StateFun" >&2; exit 2; }
command -v mvn >/dev/null || { echo "fetch.sh: mvn is needed to build the StateFun launcher" >&2; exit 2; }
start=$(date +%s)
rm -rf "$dest"
build="$dest/build"
mvn -B -q -f "$here/pom.xml" -Dmaven.repo.local="$repo_root/target/m2" -DbuildDirectory="$build" \
  package dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest/libs" >&2
cp "$build/statefun-launcher-0.jar" "$dest/statefun-launcher.jar"
echo "$stamp" >"$dest/.complete"
echo "fetch.sh: StateFun 3.3.0 on Flink 1.16.2 ($(ls "$dest/libs" | wc -l) jars, $(du -sh "$dest/libs" | cut -f1)) and the launcher into $dest in $(( $(date +%s) - start )) s" >&2
echo "$dest"
