"""Checks what a Kafka broker does with transactions and compressed batches, with kafka-python
(an independent client) and one raw Fetch request. Prints one JSON object on stdout:

- "transactions": the values a `read_committed` and a `read_uncommitted` consumer read from a
  topic holding two committed transactions around an aborted one (3 + 3 aborted + 1 records);
- "compression": per codec, what a batch produced with it comes back as in a raw Fetch (the
  codec bits of the record batch's attributes): a broker that decompresses answers "none".

Usage: check_broker.py HOST:PORT
"""
import json
import socket
import struct
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

CODECS = ["gzip", "snappy", "lz4", "zstd"]
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def read(addr, topic, isolation):
    """Every value of partition 0, up to the end a consumer of `isolation` can see."""
    tp = TopicPartition(topic, 0)
    c = KafkaConsumer(bootstrap_servers=addr, isolation_level=isolation, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=50)
    c.assign([tp])
    end = c.end_offsets([tp])[tp]  # the last stable offset for read_committed
    out, deadline = [], time.time() + 30
    while c.position(tp) < end:
        if time.time() > deadline:
            raise SystemExit(f"{isolation}: position {c.position(tp)} never reached {end}")
        for records in c.poll(timeout_ms=200).values():
            out.extend(r.value.decode() for r in records)
    c.close()
    return out


def transactions(addr):
    p = KafkaProducer(bootstrap_servers=addr, transactional_id="spindle-check-txn")
    p.init_transactions()
    p.begin_transaction()
    for i in range(3):
        p.send("txn", b"committed-%d" % i)
    p.commit_transaction()
    p.begin_transaction()
    for i in range(3):
        p.send("txn", b"aborted-%d" % i)
    p.flush()  # the aborted records are in the log before the abort marker
    p.abort_transaction()
    p.begin_transaction()
    p.send("txn", b"committed-3")
    p.commit_transaction()
    p.close()
    return {"read_committed": read(addr, "txn", "read_committed"),
            "read_uncommitted": read(addr, "txn", "read_uncommitted")}


def raw_fetch_codecs(addr, topic):
    """Fetch v4 of partition 0 from offset 0: the codec of every record batch returned."""
    host, port = addr.rsplit(":", 1)
    body = struct.pack(">iiiib", -1, 500, 1, 4 << 20, 0)  # replica, max wait, min/max bytes, read_uncommitted
    name = topic.encode()
    body += struct.pack(">ih", 1, len(name)) + name + struct.pack(">iiqi", 1, 0, 0, 4 << 20)
    client = b"spindle-check"
    header = struct.pack(">hhih", 1, 4, 1, len(client)) + client  # Fetch, v4, correlation 1
    with socket.create_connection((host, int(port)), timeout=10) as s:
        msg = header + body
        s.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", recv(s, 4))[0]
        buf = recv(s, size)
    pos = 4 + 4  # correlation id, throttle time
    (ntopics,) = struct.unpack_from(">i", buf, pos); pos += 4
    (tlen,) = struct.unpack_from(">h", buf, pos); pos += 2 + tlen
    (nparts,) = struct.unpack_from(">i", buf, pos); pos += 4
    _partition, error, _hw, _lso = struct.unpack_from(">ihqq", buf, pos); pos += 22
    if error:
        raise SystemExit(f"fetch {topic}: error code {error}")
    (naborted,) = struct.unpack_from(">i", buf, pos); pos += 4 + max(naborted, 0) * 16
    (rlen,) = struct.unpack_from(">i", buf, pos); pos += 4
    records, codecs, at = buf[pos:pos + rlen], [], 0
    while at + 23 <= len(records):
        (batch_len,) = struct.unpack_from(">i", records, at + 8)
        (attributes,) = struct.unpack_from(">h", records, at + 21)
        if at + 12 + batch_len > len(records):
            break  # a partial batch at the end of the response
        codecs.append(CODEC_NAMES.get(attributes & 7, f"unknown {attributes & 7}"))
        at += 12 + batch_len
    return codecs


def recv(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise SystemExit("the broker closed the connection")
        data += chunk
    return data


def compression(addr):
    out = {}
    for codec in CODECS:
        topic = f"codec-{codec}"
        p = KafkaProducer(bootstrap_servers=addr, compression_type=codec, linger_ms=50)
        for i in range(20):
            p.send(topic, b"%s record %d, compressible compressible compressible" % (codec.encode(), i))
        p.flush()
        p.close()
        values = read(addr, topic, "read_uncommitted")
        out[codec] = {"served_as": raw_fetch_codecs(addr, topic), "records_read": len(values)}
    return out


def main():
    addr = sys.argv[1]
    admin = KafkaAdminClient(bootstrap_servers=addr)
    admin.create_topics([NewTopic(t, 1, 1) for t in ["txn"] + [f"codec-{c}" for c in CODECS]])
    admin.close()
    print(json.dumps({"transactions": transactions(addr), "compression": compression(addr)}))


if __name__ == "__main__":
    main()
