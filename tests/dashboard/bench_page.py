"""Benchmark: how fast the dashboard page answers with N requests in the ledger (not a test).

    source .stack/env && .venv/bin/python -m tests.dashboard.bench_page --requests 1000 --views 50

Writes N synthetic ledger records (mixed statuses over 60 days) under a throw-away model name in the
stack's bucket with the pipeline's credentials, starts ``python -m dashboard`` for that model with
LAU_DASHBOARD_LEDGER_TTL_S=0 (every view lists S3 again: no view is served from the 2 s view cache),
times the first (cold: every object downloaded) view, then ``--views`` sequential views (wall time and
the server's CPU time per view, which other jobs on the machine do not inflate) and /metrics scrapes,
prints JSON, and deletes the records. The dashboard process itself never writes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parents[2]
MIX = (("registered", 0.75), ("rejected", 0.15), ("pending", 0.05), ("failed", 0.03), ("running", 0.02))


def record(model: str, index: int, rng: random.Random, now: dt.datetime) -> dict:
    status = rng.choices([s for s, _ in MIX], [w for _, w in MIX])[0]
    submitted = now - dt.timedelta(days=rng.uniform(0, 60))
    took = dt.timedelta(seconds=rng.lognormvariate(8, 1.5))
    done = min(submitted + took, now)
    iso = lambda t: t.isoformat(timespec="milliseconds")  # noqa: E731
    history = [{"at": iso(submitted), "status": "pending", "note": "filed"}]
    data = {"request_id": f"req-bench-{index:05d}", "model": model, "classes": [rng.randrange(10)], "reason": "",
            "status": status, "submitted_at": iso(submitted), "updated_at": iso(submitted), "attempts": 0,
            "history": history}
    if status != "pending":
        history.append({"at": iso(done), "status": status, "note": ""})
        data |= {"updated_at": iso(done), "attempts": 1}
    if status in ("registered", "rejected"):
        checks = [{"name": "forget_acc", "value": 0.0, "threshold": 0.0, "op": "==", "passed": True},
                  {"name": "retain_drop", "value": rng.uniform(0, 2), "threshold": 1.0, "op": "<=",
                   "passed": status == "registered"}]
        data |= {"gate": {"passed": status == "registered", "checks": checks}, "version": str(index),
                 "parent_version": "1", "report_uri": f"s3://lau/reports/{model}/req-bench-{index:05d}/report.html"}
    return data


def timed_get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as answer:
        answer.read()
        assert answer.status == 200
    return (time.perf_counter() - start) * 1000


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used: what a view costs whatever else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1), "max_ms": round(ordered[-1], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--views", type=int, default=50)
    args = parser.parse_args()
    bucket, model = os.environ["LAU_BUCKET"], f"bench-dash-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=os.environ["LAU_S3_ENDPOINT"])
    rng, now = random.Random(0), dt.datetime.now(dt.UTC)
    keys = [f"requests/{model}/req-bench-{i:05d}.json" for i in range(args.requests)]
    print(f"[bench] writing {len(keys)} ledger records for {model}", file=sys.stderr)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=keys[i], Body=json.dumps(record(model, i, rng, now))),
                      range(len(keys))))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The default model is another one, so that the first view of this one is cold (1,000 GETs).
    proc = subprocess.Popen([sys.executable, "-m", "dashboard", "--port", str(port), "--model", f"{model}-x"], cwd=REPO,
                            env={**os.environ, "LAU_DASHBOARD_LEDGER_TTL_S": "0"}, start_new_session=True,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                timed_get(f"{url}/healthz")
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(15)  # let the warm-up thread import MLflow, as it has long done in a running stack
        cold = timed_get(f"{url}/models/{model}")
        cpu = cpu_s(proc.pid)
        views = [timed_get(f"{url}/models/{model}") for _ in range(args.views)]
        cpu = (cpu_s(proc.pid) - cpu) / args.views * 1000
        scrapes = [timed_get(f"{url}/metrics") for _ in range(args.views)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
    print(json.dumps({"requests": args.requests, "first_view_ms": round(cold, 1),
                      "page": {**summary(views), "server_cpu_ms": round(cpu, 1)},
                      "metrics": summary(scrapes), "views": args.views}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
