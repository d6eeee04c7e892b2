#!/usr/bin/env bash
# Resolves Apache Kafka (org.apache.kafka:kafka_2.13, the broker; KRaft only since 4.0) and its
# runtime dependencies with Maven into ROOT/<version>/libs (default ROOT: target/kafka), so the
# tests can run `java -cp 'libs/*' kafka.Kafka`. Everything comes from the Maven registry, through
# a local repository under target/m2. Idempotent: a complete libs directory is kept.
# Prints progress on stderr and the libs directory on stdout.
# Usage: fetch.sh [ROOT]    (env: KAFKA_VERSION, default 4.1.1)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
version="${KAFKA_VERSION:-4.1.1}"
root="${1:-$repo_root/target/kafka}"
dest="$root/$version"
libs="$dest/libs"
# Several test binaries may ask at once: one fetch, the others wait for it.
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if [ -f "$dest/.complete" ]; then
  echo "$libs"
  exit 0
fi
command -v java >/dev/null || { echo "fetch.sh: java is needed to run Kafka $version" >&2; exit 2; }
command -v mvn >/dev/null || { echo "fetch.sh: mvn is needed to fetch Kafka $version" >&2; exit 2; }
start=$(date +%s)
rm -rf "$libs"
mvn -B -q -f "$here/pom.xml" -Dmaven.repo.local="$repo_root/target/m2" -Dkafka.version="$version" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >&2
[ -f "$libs/kafka_2.13-$version.jar" ] || { echo "fetch.sh: kafka_2.13-$version.jar missing after the fetch" >&2; exit 1; }
touch "$dest/.complete"
echo "fetch.sh: Apache Kafka $version (kafka_2.13 and $(ls "$libs" | wc -l) jars, $(du -sh "$libs" | cut -f1)) into $libs in $(( $(date +%s) - start )) s" >&2
echo "$libs"
