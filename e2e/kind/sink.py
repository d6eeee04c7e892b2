"""The e2e egress sink: records every POST with its Idempotency-Key; GET /records lists them.

Runs in the kind cluster (python image, stdlib only). Never restarted during the suite, so
what it holds is everything the workers released.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

records = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            records.append({"key": self.headers.get("Idempotency-Key"), "body": body.decode()})
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        with lock:
            out = json.dumps(records).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
