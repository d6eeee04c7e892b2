#!/usr/bin/env bash
# Runs one Apache Kafka node as broker and KRaft controller on loopback, for tests and
# benchmarks: writes DIR/server.properties, formats DIR/logs (`kafka-storage format`: the
# StorageTool main class) with a fresh cluster id, then execs the broker (`kafka-server-start`:
# kafka.Kafka), so this script's pid is the broker's. Its log goes to DIR/broker.log.
# Usage: start.sh DIR PORT CONTROLLER_PORT   (env: KAFKA_VERSION, KAFKA_HEAP_OPTS, KAFKA_OPTS)
set -euo pipefail
dir=${1:?usage: start.sh DIR PORT CONTROLLER_PORT}
port=${2:?usage: start.sh DIR PORT CONTROLLER_PORT}
cport=${3:?usage: start.sh DIR PORT CONTROLLER_PORT}
here="$(cd "$(dirname "$0")" && pwd)"
libs="$(bash "$here/fetch.sh")"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/logs
num.partitions=1
# One node: every internal topic with one replica (and one partition, which loads faster).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
cat >"$dir/log4j2.properties" <<PROPS
rootLogger.level=\${env:KAFKA_LOG_LEVEL:-WARN}
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/broker.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
PROPS
# A cluster id is 16 random bytes in URL-safe base64 without padding (what `random-uuid` prints;
# it may start with "-", hence `--cluster-id=`).
cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
jvm=(-Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties")
java "${jvm[@]}" -cp "$libs/*" kafka.tools.StorageTool format --cluster-id="$cluster_id" --config="$dir/server.properties" >"$dir/format.log" 2>&1 ||
  { cat "$dir/format.log" >&2; exit 1; }
# shellcheck disable=SC2086 # the options are a list of JVM flags
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC "${jvm[@]}" ${KAFKA_OPTS:-} \
  -cp "$libs/*" kafka.Kafka "$dir/server.properties"
