"""Writes what real producers write into one topic, with kafka-python: batches compressed with
each codec, then transactions, one of them aborted. Values are the example counter's adds,
`{"seq": N, "value": 1}`, keyed `k{N % 10}`. Prints, as JSON, the seqs a `read_committed`
consumer must see and those it must not.

- seqs 0..199: 50 records each with gzip, snappy, lz4 and zstd (in that order, one producer
  per codec, lingering so that the records form compressed batches of several records);
- seqs 200..219 committed in one transaction, 220..239 in a transaction that is aborted after
  its records are in the log, 240..259 committed in a third.

Usage: produce_mixed.py HOST:PORT TOPIC
"""
import json
import sys

from kafka import KafkaProducer

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def value(seq):
    return json.dumps({"seq": seq, "value": 1}).encode()


def main():
    addr, topic = sys.argv[1], sys.argv[2]
    seq = 0
    for codec in CODECS:
        p = KafkaProducer(bootstrap_servers=addr, compression_type=codec, linger_ms=100, batch_size=1 << 20)
        for _ in range(50):
            p.send(topic, key=b"k%d" % (seq % 10), value=value(seq))
            seq += 1
        p.flush()
        p.close()
    p = KafkaProducer(bootstrap_servers=addr, transactional_id="spindle-test-mixed")
    p.init_transactions()
    committed, aborted = list(range(seq)), []
    for outcome in ["commit", "abort", "commit"]:
        p.begin_transaction()
        for _ in range(20):
            p.send(topic, key=b"k%d" % (seq % 10), value=value(seq))
            (committed if outcome == "commit" else aborted).append(seq)
            seq += 1
        p.flush()
        if outcome == "commit":
            p.commit_transaction()
        else:
            p.abort_transaction()
    p.close()
    print(json.dumps({"committed": committed, "aborted": aborted}))


if __name__ == "__main__":
    main()
