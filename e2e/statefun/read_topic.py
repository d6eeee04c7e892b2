"""Reads every record of a Kafka topic as a `read_committed` consumer (kafka-python), from the
beginning, until stopped: one JSON line per record on stdout, `[partition, offset,
arrival_ms, value]` (arrival on the wall clock, ms since the epoch; value as text). No
deduplication of any kind: what a plain downstream consumer would see.

Usage: read_topic.py HOST:PORT TOPIC PARTITIONS
"""
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def main():
    addr, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    consumer = KafkaConsumer(bootstrap_servers=addr, isolation_level="read_committed",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=20, max_poll_records=5000)
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    print(json.dumps(["ready"]), flush=True)
    out = sys.stdout
    while True:
        polled = consumer.poll(timeout_ms=100)
        now = time.time() * 1e3
        for tp, records in polled.items():
            for r in records:
                out.write(json.dumps([tp.partition, r.offset, now, r.value.decode()]) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
