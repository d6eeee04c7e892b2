"""The e2e driver: visits for PERSONS people, numbers FIRST..LAST, through the HTTP ingress.

Each visit is sent with `Spindle-Ack: durable` and an Idempotency-Key, and retried until it
is acknowledged (200): a worker may be deleted meanwhile. Prints `acked N` as it goes (the
suite deletes a worker pod once enough are in) and exits 0 when every visit is acknowledged.
"""
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

URL = os.environ.get("INGRESS", "http://greeter-ingress:8090")
PERSONS = int(os.environ.get("PERSONS", "10"))
FIRST, LAST = int(os.environ["FIRST"]), int(os.environ["LAST"])
DEADLINE = time.monotonic() + float(os.environ.get("DEADLINE_S", "600"))

acked = 0
retries = 0


def visit(person, k):
    global acked, retries
    req = urllib.request.Request(
        f"{URL}/example/person/p{person}",
        data=b"{}",
        method="POST",
        headers={
            "Content-Type": "application/vnd.example/Visit",
            "Spindle-Ack": "durable",
            "Idempotency-Key": f"visit-p{person}-{k}",
        },
    )
    while time.monotonic() < DEADLINE:
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                if resp.status == 200:
                    acked += 1
                    return
        except (urllib.error.URLError, OSError):
            pass
        retries += 1
        time.sleep(0.5)
    raise SystemExit(f"visit {k} of p{person} not acknowledged before the deadline")


def main():
    jobs = [(p, k) for k in range(FIRST, LAST + 1) for p in range(PERSONS)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = [pool.submit(visit, p, k) for p, k in jobs]
        last = -1
        while not all(f.done() for f in futures):
            if acked // 20 != last:
                last = acked // 20
                print(f"acked {acked} of {len(jobs)} (retries {retries})", flush=True)
            time.sleep(0.5)
        for f in futures:
            f.result()
    print(f"acked {acked} of {len(jobs)} (retries {retries}): done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
