"""Checks the sink's records: every person's greetings for visits 1..LAST exactly once.

Records released twice with the same Idempotency-Key (after a failure, docs/checkpoints.md)
count once: that is what the key is for. A visit number missing, or present under two
different keys, is a failure: lost or duplicated.
Usage: check.py SINK_URL PERSONS LAST
"""
import json
import sys
import time
import urllib.request

url, persons, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 120
while True:
    with urllib.request.urlopen(f"{url}/records", timeout=10) as resp:
        records = json.load(resp)
    by_key = {}
    for r in records:
        by_key.setdefault(r["key"], r["body"])
    seen = {}
    for key, body in by_key.items():
        g = json.loads(body)
        seen.setdefault(g["name"], []).append(g["visits"])
    want = {f"p{p}": list(range(1, last + 1)) for p in range(persons)}
    got = {name: sorted(v) for name, v in seen.items()}
    if got == want:
        print(f"check: {len(by_key)} greetings, each visit 1..{last} of {persons} people exactly once "
              f"({len(records) - len(by_key)} re-sent with the same key)")
        sys.exit(0)
    complete = all(len(got.get(n, [])) >= len(v) for n, v in want.items())
    if complete or time.monotonic() > deadline:
        for name, visits in sorted(want.items()):
            have = got.get(name, [])
            missing = sorted(set(visits) - set(have))
            twice = sorted({v for v in have if have.count(v) > 1})
            extra = sorted(set(have) - set(visits))
            if missing or twice or extra:
                print(f"check: {name}: missing {missing}, duplicated {twice}, unexpected {extra}")
        sys.exit(1)
    time.sleep(2)
