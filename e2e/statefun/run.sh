#!/usr/bin/env bash
# Runs one StateFun 3.3.0 application in one JVM (the StateFun job on a local Flink 1.16.2
# MiniCluster, e2e/statefun/src): DIR/flink.properties holds the Flink configuration
# (flink-conf.yaml keys; `statefun.remote.module-name` points at the module.yaml). Builds the
# launcher first if needed (fetch.sh). Execs the JVM, so this script's pid is StateFun's; its
# log goes to DIR/statefun.log.  Usage: run.sh DIR   (env: STATEFUN_HEAP, default -Xmx2g)
set -euo pipefail
dir=${1:?usage: run.sh DIR}
here="$(cd "$(dirname "$0")" && pwd)"
dest="$(bash "$here/fetch.sh")"
dir="$(cd "$dir" && pwd)"
cat >"$dir/log4j2.properties" <<PROPS
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/statefun.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=%d{HH:mm:ss,SSS} %p %c{1} - %m%n
# The Kafka clients log every connection and producer at INFO.
logger.kafka.name=org.apache.kafka
logger.kafka.level=WARN
PROPS
# Flink 1.16 predates Java 17 support (1.18): its RPC (Akka), Kryo and the memory manager reach
# into JDK internals, which Java 17 closes by default. These are the flags Flink 1.18 sets
# itself (env.java.opts.all in its default configuration).
opens=()
for p in java.lang java.net java.io java.nio sun.nio.ch java.lang.reflect java.text java.time \
  java.util java.util.concurrent java.util.concurrent.atomic java.util.concurrent.locks; do
  opens+=("--add-opens=java.base/$p=ALL-UNNAMED")
done
opens+=(--add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED)
# shellcheck disable=SC2086 # STATEFUN_HEAP is a list of JVM flags
exec java ${STATEFUN_HEAP:--Xmx2g} "${opens[@]}" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
  -cp "$dest/statefun-launcher.jar:$dest/libs/*" dev.spindle.statefun.Launcher "$dir/flink.properties"
