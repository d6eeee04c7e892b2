#!/usr/bin/env python3
"""Draws the chart's Grafana dashboard (charts/spindle-operator/dashboards/spindle.json) from a
real run: three `spindle` workers (`spindle run --workers 3`) serving the greeter example with
its function process, scraped every 2 s by a real Prometheus on loopback, under a varying load
of HTTP ingress records (some for a type no function serves: dead letters), with one worker
killed (SIGKILL) half-way so that the application rolls back. Every timeseries and stat panel
is the dashboard's own query, sent to Prometheus's query_range API with the dashboard's
variables filled in ($namespace=local, $application=greeter, $__rate_interval=10s). The two
resource panels use kubelet (cAdvisor) metrics that a local run does not have: they are drawn
from /proc samples of the worker processes instead, and say so.

    /usr/bin/python3 e2e/monitoring/render_dashboard.py --spindle target/debug/spindle \\
        --greeter target/debug/greeter --out docs/dashboard.png

Needs `prometheus` (Debian package `prometheus`, 2.42) and matplotlib (`python3-matplotlib`;
run it with the Python that has it, e.g. /usr/bin/python3).
Traffic stays on 127.0.0.1; every port is taken from a port-0 listener.
"""

import argparse
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARD = os.path.join(ROOT, "charts/spindle-operator/dashboards/spindle.json")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Every process started here, each in its own session: stopped (its whole group) at exit,
# however the script ends.
PROCS = []


def stop_all():
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in PROCS:
        try:
            p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def wait_for(what, deadline_s, check):
    end = time.time() + deadline_s
    last = None
    while time.time() < end:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - report the last failure at the deadline
            last = e
        time.sleep(0.2)
    sys.exit(f"render_dashboard: gave up waiting for {what} after {deadline_s}s (last: {last})")


APP = """apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: greeter}}
spec:
  workers: 3
  functions:
    - typename: example/*
      endpoint: http://127.0.0.1:8000/statefun
      local: {{command: ["{greeter}"]}}
  ingresses:
    - name: web
      http: {{port: {ingress_port}}}
  egresses:
    - typename: example/greets
      file: {{path: greets.jsonl}}
  checkpoint:
    interval: 1s
    storage: {storage}
"""


def post(url, typename, body=b"{}"):
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": f"application/vnd.{typename}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def drive(ingresses, stop, started, duration, counts):
    """Records at a rate that rises and falls (20..120 per second over the run), 1 in 50 for a
    type no function serves."""
    n = 0
    while not stop.is_set():
        t = time.time() - started
        rate = 70 + 50 * math.sin(2 * math.pi * t / duration)
        base = ingresses[n % len(ingresses)]
        if n % 50 == 49:
            status = post(f"{base}/nobody/thing/x{n % 7}", "nobody/Nothing")
        else:
            status = post(f"{base}/example/person/p{n % 40}", "example/Visit")
        counts[status] = counts.get(status, 0) + 1
        n += 1
        time.sleep(1.0 / rate)


def proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    ticks = int(rest[11]) + int(rest[12])
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return ticks / os.sysconf("SC_CLK_TCK"), rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spindle", required=True)
    ap.add_argument("--greeter", required=True)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/dashboard.png"))
    ap.add_argument("--seconds", type=int, default=240)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="spindle-dashboard-")
    app = os.path.join(work, "app.yaml")
    with open(app, "w") as f:
        f.write(APP.format(greeter=os.path.abspath(args.greeter), storage=f"file://{work}/checkpoints", ingress_port=free_port()))
    procs = PROCS
    log = open(os.path.join(work, "spindle.log"), "w")
    spindle = subprocess.Popen(
        [os.path.abspath(args.spindle), "run", app, "--workers", "3", "--data-dir", os.path.join(work, ".spindle")],
        stdout=log, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "SPINDLE_LOG": "warn"},
    )
    procs.append(spindle)
    workers = {}
    pattern = re.compile(r"started worker (\d+) \(pid (\d+)\): ingress ([^\s,]+), admin ([^\s,]+)")

    def read_started():
        for line in spindle.stderr:
            log.write(line)
            log.flush()
            m = pattern.search(line)
            if m:
                workers[int(m.group(1))] = {"pid": int(m.group(2)), "ingress": m.group(3), "admin": m.group(4)}

    threading.Thread(target=read_started, daemon=True).start()
    wait_for("three workers", 120, lambda: len(workers) == 3)
    for w in workers.values():
        wait_for("a ready worker", 120, lambda w=w: urllib.request.urlopen(w["admin"] + "/readyz", timeout=2).status == 200)
    print("render_dashboard: started", json.dumps(workers), file=sys.stderr)

    prom_port = free_port()
    scrape = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [{
            "job_name": "spindle-workers",
            "static_configs": [
                {"targets": [w["admin"].removeprefix("http://")],
                 "labels": {"namespace": "local", "application": "greeter", "pod": f"greeter-worker-{i}"}}
                for i, w in sorted(workers.items())
            ],
        }],
    }
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        json.dump(scrape, f)  # JSON is YAML
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/tsdb",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=log, start_new_session=True,
    )
    procs.append(prom)
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    wait_for("Prometheus", 60, lambda: urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2).status == 200)

    started = time.time()
    stop = threading.Event()
    counts = {}
    drivers = [threading.Thread(target=drive, args=([w["ingress"] for w in workers.values()], stop, started, args.seconds, counts), daemon=True) for _ in range(2)]
    for d in drivers:
        d.start()
    usage = {i: [] for i in workers}
    killed = False
    while time.time() - started < args.seconds:
        now = time.time()
        for i, w in workers.items():
            try:
                usage[i].append((now, *proc_sample(w["pid"])))
            except OSError:
                pass
        if not killed and now - started > args.seconds / 2:
            os.kill(workers[1]["pid"], signal.SIGKILL)
            killed = True
            print(f"render_dashboard: killed worker 1 (pid {workers[1]['pid']}) at {now - started:.0f}s", file=sys.stderr)
        time.sleep(2)
    stop.set()
    end = time.time()
    time.sleep(3)  # a last scrape
    print(f"render_dashboard: ingress answers {counts}", file=sys.stderr)

    def query_range(expr):
        q = urllib.parse.urlencode({"query": expr, "start": started, "end": end, "step": 2})
        with urllib.request.urlopen(f"{api}/query_range?{q}", timeout=30) as r:
            data = json.load(r)
        if data.get("status") != "success":
            sys.exit(f"render_dashboard: {expr}: {data}")
        return data["data"]["result"]

    dashboard = json.load(open(DASHBOARD))
    variables = {"$namespace": "local", "$application": "greeter", "$__rate_interval": "10s", "$__range": f"{int(end - started)}s"}

    def fill(expr):
        for k in sorted(variables, key=len, reverse=True):
            expr = expr.replace(k, variables[k])
        return expr

    def legend(fmt, metric):
        return re.sub(r"\{\{(\w+)\}\}", lambda m: metric.get(m.group(1), ""), fmt) or str(metric)

    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    series_by_panel = []
    for p in panels:
        drawn = []
        for t in p["targets"]:
            expr = t["expr"]
            if "container_" in expr:
                continue
            for r in query_range(fill(expr)):
                xs = [float(v[0]) - started for v in r["values"]]
                ys = [float(v[1]) for v in r["values"]]
                ys = [y if math.isfinite(y) else float("nan") for y in ys]
                drawn.append((legend(t.get("legendFormat", ""), r["metric"]), xs, ys))
        series_by_panel.append(drawn)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    fig = plt.figure(figsize=(24, 30), facecolor="#111217")
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    unit_fmt = {"bytes": lambda v: f"{v / 1e6:.1f} MB", "s": lambda v: f"{v * 1000:.1f} ms"}
    for p, drawn in zip(panels, series_by_panel):
        g = p["gridPos"]
        ax = fig.add_axes([g["x"] / 24 + 0.006, 1 - (g["y"] + g["h"]) / height + 0.004, g["w"] / 24 - 0.012, g["h"] / height - 0.022])
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#333")
        ax.tick_params(colors="#aaa", labelsize=8)
        ax.set_title(p["title"], color="#ddd", fontsize=10, loc="left")
        unit = p["fieldConfig"]["defaults"].get("unit", "short")
        if "container_" in json.dumps(p["targets"]):
            key = 1 if "CPU" in p["title"] else 2
            for i, samples in sorted(usage.items()):
                if key == 1:
                    xs = [b[0] - started for a, b in zip(samples, samples[1:])]
                    ys = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:])]
                else:
                    xs = [s[0] - started for s in samples]
                    ys = [s[2] / 1e6 for s in samples]
                ax.plot(xs, ys, linewidth=1.2, label=f"greeter-worker-{i}" + (" (its first process)" if i == 1 else ""))
            ax.set_xlim(0, args.seconds)
            ax.set_title(p["title"] + " — locally from /proc (in a cluster: kubelet metrics)", color="#ddd", fontsize=10, loc="left")
            if key == 2:
                ax.set_ylabel("MB", color="#aaa", fontsize=8)
            ax.legend(fontsize=7, facecolor="#181b1f", labelcolor="#ccc", loc="upper left")
            continue
        if p["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            last = [ys[-1] for _, _, ys in drawn if ys]
            text = f"{last[0]:.3g}" if last else "no data (no series yet)"
            ax.text(0.5, 0.45, text, color="#73bf69", fontsize=28, ha="center", va="center", transform=ax.transAxes)
            continue
        for name, xs, ys in drawn:
            if unit == "s":
                ys = [y * 1000 for y in ys]
            elif unit == "bytes":
                ys = [y / 1e6 for y in ys]
            ax.plot(xs, ys, linewidth=1.2, label=name[:40])
        if unit in ("s", "bytes"):
            ax.set_ylabel({"s": "ms", "bytes": "MB"}[unit], color="#aaa", fontsize=8)
        if drawn:
            ax.legend(fontsize=7, facecolor="#181b1f", labelcolor="#ccc", loc="upper left", ncol=2)
        else:
            ax.text(0.5, 0.5, "no data", color="#888", ha="center", transform=ax.transAxes)
        ax.axvline(args.seconds / 2, color="#f2495c", linewidth=0.8, linestyle="--")
        ax.set_xlim(0, args.seconds)
    for r in rows:
        fig.text(0.006, 1 - (r["gridPos"]["y"] + 0.75) / height, r["title"], color="#eee", fontsize=13, weight="bold")
    fig.text(0.5, 0.003, f"Spindle dashboard, drawn from a real run: 3 workers (spindle run --workers 3, {os.path.basename(os.path.dirname(os.path.abspath(args.spindle)))} build), greeter example, {args.seconds} s of varying HTTP load, "
             "worker 1 killed (SIGKILL) at the dashed line and restarted by the runner; every panel is the dashboard's query against Prometheus 2.42 (x: seconds)",
             color="#aaa", ha="center", fontsize=9)
    fig.savefig(args.out, dpi=60, facecolor=fig.get_facecolor())
    print(f"render_dashboard: wrote {args.out} ({len(panels)} panels)", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
