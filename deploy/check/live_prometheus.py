#!/usr/bin/env python3
"""Evaluates every dashboard panel query and every alert's query against a real
Prometheus scraping live `ballast-dev up` stacks, and fails unless each returns series.

Three stacks run: one with SQLite failover and dedup on a Redis of its own, one without
failover, and one with SQS failover on a moto_server of its own (the retention series
exist only there). Traffic drives each outcome the panels and alerts measure: records to Kafka
(local and cross-AZ), a cluster outage (failover on the first stack; UNAVAILABLE and open
breakers on the second), consumers claiming ids, and Redis going away under them.
An alert's query is its expr without the last line (`<op> <threshold>`); promtool checks
the thresholds (deploy/helm/ballast/tests/rules_test.yaml).
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ballast"
BIN_DIR = Path(os.environ.get("BALLAST_BIN_DIR", ROOT / "target" / "debug"))
BIN = BIN_DIR / "ballast"
DEV_BIN = BIN_DIR / "ballast-dev"
procs = []


def log(msg):
    print(f"live-prometheus: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} is not listening on {port} after 30 s")


def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
    procs.append(p)
    return p


def dev(*args):
    p = spawn([str(DEV_BIN), "up", "--gateway-addr", "127.0.0.1:0", "--topic", "events:6:3", *args],
              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            raise SystemExit(f"ballast-dev up {' '.join(args)} exited before its ready line")
        if line.startswith("{") and '"ready"' in line:
            return json.loads(line)
    raise SystemExit("ballast-dev up gave no ready line within 90 s")


def cli(*args, check=True):
    # chaos is a development tool; everything else is the operator CLI.
    binary = DEV_BIN if args[0] == "chaos" else BIN
    r = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise SystemExit(f"{binary.name} {' '.join(args)}: {r.stderr.strip()[:500]}")
    return r


def query(prom, expr):
    url = f"http://{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]["result"]


def alert_queries():
    rules = yaml.safe_load((CHART / "files" / "rules.yaml").read_text())
    out = []
    for g in rules["groups"]:
        for rule in g["rules"]:
            lines = rule["expr"].strip().splitlines()
            if len(lines) < 2 or not re.fullmatch(r"\s*(>|<|>=|<=|==|!=)\s*[0-9.e+-]+\s*", lines[-1]):
                raise SystemExit(f"alert {rule['alert']}: its expr must end with a line `<op> <threshold>`")
            out.append((f"alert {rule['alert']}", "\n".join(lines[:-1])))
    return out


def panel_queries():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["dashboard"]
    text = (CHART / "files" / "dashboard.json").read_text()
    text = text.replace("__CROSS_AZ_DOLLARS_PER_GB__", str(values["crossAzDollarsPerGB"]))
    text = text.replace("__ZONES__", str(values["zones"]))
    dash = json.loads(text)
    return [(f"panel {p['title']} ({t['refId']})", t["expr"]) for p in dash["panels"] for t in p["targets"]]


def main():
    for b in (BIN, DEV_BIN):
        if not b.exists():
            raise SystemExit(f"{b} is missing: build the workspace first")
    tmp = Path(tempfile.mkdtemp(prefix="ballast-live-prom-"))
    redis_port = free_port()
    spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    moto_port = free_port()
    spawn(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(moto_port, "moto_server")
    log("starting three ballast-dev up stacks")
    a = dev("--dedup-backend", "redis", "--redis-url", f"redis://127.0.0.1:{redis_port}")
    b = dev("--failover", "none")
    c = dev("--failover", "sqs", "--sqs-endpoint", f"http://127.0.0.1:{moto_port}")
    targets = [t for s in (a, b, c) for t in s["admin"].values()]
    prom = f"127.0.0.1:{free_port()}"
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "ballast", "static_configs": [{"targets": targets}]}],
    }))
    spawn(["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
           f"--web.listen-address={prom}", "--log.level=error"],
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log(f"prometheus on {prom} scraping {len(targets)} admin endpoints")

    log("traffic: records to Kafka, keyed across racks")
    for i in range(6):
        cli("produce", "--gateway", a["gateway"], "--topic", "events", "--key", f"k{i}", "--count", "20", "v")
        cli("produce", "--gateway", b["gateway"], "--topic", "events", "--key", f"k{i}", "--count", "5", "v")
    log("traffic: a consumer claims ids through dedup")
    cli("consume", "--bootstrap", a["kafka_bootstrap"], "--topic", "events", "--group", "live",
        "--dedup", a["dedup"], "--idle-exit", "2s")
    log("traffic: an outage on both clusters (failover on one, UNAVAILABLE on the other)")
    cli("chaos", "--control", a["control"], "outage")
    cli("chaos", "--control", b["control"], "outage")
    cli("produce", "--gateway", a["gateway"], "--topic", "events", "--count", "50", "v", check=False)
    cli("produce", "--gateway", b["gateway"], "--topic", "events", "--count", "50", "v", check=False)
    cli("chaos", "--control", a["control"], "recover")
    log("traffic: Redis goes away under a consumer")
    procs[0].terminate()
    procs[0].wait()
    cli("consume", "--bootstrap", a["kafka_bootstrap"], "--topic", "events", "--group", "after-redis",
        "--dedup", a["dedup"], "--idle-exit", "2s", check=False)
    # Keep stack b's breakers open (its cluster stays down) and let a few scrapes land.
    cli("produce", "--gateway", b["gateway"], "--topic", "events", "--count", "20", "v", check=False)
    time.sleep(6)

    missing = []
    checked = 0
    for label, expr in panel_queries() + alert_queries():
        deadline = time.time() + 20
        while True:
            result = query(prom, expr)
            if result or time.time() > deadline:
                break
            time.sleep(1)
        checked += 1
        if result:
            log(f"ok {label}: {len(result)} series")
        else:
            missing.append(label)
            log(f"NO SERIES {label}: {expr}")
    if missing:
        log(f"{len(missing)} of {checked} queries returned no series")
        return 1
    log(f"all {checked} queries returned series")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    sys.exit(code)
