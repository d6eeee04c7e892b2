"""Reads every record of a Kafka topic once, from the beginning to the end a consumer of the
given isolation can see (the last stable offset for `read_committed`), with kafka-python: an
independent client and no deduplication of any kind. Prints one JSON array on stdout, per record
`[partition, offset, value, idempotency_key]` (value as text; key null when the header is absent).

Usage: read_all.py HOST:PORT TOPIC PARTITIONS read_committed|read_uncommitted
"""
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def main():
    addr, topic, partitions, isolation = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c = KafkaConsumer(bootstrap_servers=addr, isolation_level=isolation, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=50, max_poll_records=5000)
    c.assign(tps)
    c.seek_to_beginning(*tps)
    ends = c.end_offsets(tps)
    out, deadline = [], time.time() + 60
    while any(c.position(tp) < ends[tp] for tp in tps):
        if time.time() > deadline:
            behind = {tp.partition: (c.position(tp), ends[tp]) for tp in tps if c.position(tp) < ends[tp]}
            raise SystemExit(f"{isolation}: positions never reached the ends: {behind}")
        for tp, records in c.poll(timeout_ms=200).items():
            for r in records:
                key = dict(r.headers).get("idempotency-key")
                out.append([tp.partition, r.offset, r.value.decode(), key.decode() if key else None])
    c.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
