"""A warm deletion through the served deployment, timed from the request to the champion.

Needs the stack and a running `lau serve --model M` (its warm worker polls the ledger every
``--poll`` seconds, 0.2 by default, and keeps torch, MLflow and the caches loaded). For each class:
`lau request add` files the request; this script then reads the request's ledger record (one S3
GET every 0.25 s) until it is final, and checks that the registry's alias names its version:

    python -m bench.warm --model M --classes 1,2,4,6,9 --json docs/bench/warm.json

Per request: ``to_champion_s`` (submitted_at in the ledger -> ``champion_at``, the moment the
flow's alias update was answered by MLflow, so any client reads the new champion from then on;
the worker's clock against the one `lau request add` ran on: the same machine here, their skew
otherwise),
``to_final_s`` (-> the ledger's final entry: audit report and record written), ``pickup_s`` (-> the
worker marking it running) and the flow's own timings, in the order they run: ``load_s`` (the
champion and its checkpoint), ``engine_gate_s`` (features, LAU, evaluation, root accuracy, gate;
``features_s``, ``unlearn_s`` and ``evaluate_s`` are parts of it), ``register_s`` (the MLflow run's
servable part and the version), ``promote_s`` (the alias), ``to_champion_s`` (from the flow's start)
and ``total_s`` (plots, the run's audit part, report and record included).

An earlier version of this script watched the alias itself, 20 reads a second: each read costs the
MLflow server ~28 ms of CPU, so on 2 cores the watching took about half of the MLflow server's CPU
time during the deletions and slowed the registration it was timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAU = str(Path(sys.executable).with_name("lau"))


def lau(model: str, *args: str) -> dict:
    done = subprocess.run([LAU, *args, "--model", model, "--json"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"lau {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def one(model: str, klass: int, client, ledger, timeout_s: float = 120) -> dict:  # noqa: ANN001 - MlflowClient, Ledger
    request_id = lau(model, "request", "add", "--classes", str(klass))["request_id"]
    deadline = time.monotonic() + timeout_s
    while True:
        record = ledger.get(request_id, model)
        if record.status.final:
            break
        if str(record.status) == "failed":
            raise SystemExit(f"class {klass}: request {request_id} failed: {record.error}")
        if time.monotonic() > deadline:
            raise SystemExit(f"class {klass}: request {request_id} is still {record.status} after {timeout_s:g} s "
                             f"({record.error or 'no error'}); is `lau serve --model {model}` running?")
        time.sleep(0.25)
    data = record.to_json()
    timings = data.get("timings") or {}
    if data["status"] == "registered":
        champion = client.get_model_version_by_alias(model, "champion").version
        if champion != data.get("version"):
            raise SystemExit(f"class {klass}: registered version {data.get('version')} but the champion is {champion}")
    submitted = dt.datetime.fromisoformat(data["submitted_at"])
    running = next(dt.datetime.fromisoformat(h["at"]) for h in data["history"] if h["status"] == "running")
    final = dt.datetime.fromisoformat(data["history"][-1]["at"])
    champion_at = timings.get("champion_at")
    return {"class": klass, "status": data["status"], "version": data.get("version"),
            "to_champion_s": round((dt.datetime.fromisoformat(champion_at) - submitted).total_seconds(), 3)
            if champion_at else None,
            "to_final_s": round((final - submitted).total_seconds(), 3),
            "pickup_s": round((running - submitted).total_seconds(), 3), "timings": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warm")
    parser.add_argument("--model", required=True)
    parser.add_argument("--classes", default="1,2,4,6,9")
    parser.add_argument("--json", dest="json_path", default="docs/bench/warm.json")
    args = parser.parse_args(argv)
    from mlflow import MlflowClient

    from tasks.context import Context

    client, ledger = MlflowClient(), Context.load(args.model).ledger
    rows = []
    for klass in (int(c) for c in args.classes.split(",")):
        rows.append(one(args.model, klass, client, ledger))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"model": args.model, "rows": rows,
              "median_to_champion_s": statistics.median(r["to_champion_s"] for r in rows if r["to_champion_s"] is not None),
              "median_to_final_s": statistics.median(r["to_final_s"] for r in rows),
              "load_1min": round(os.getloadavg()[0], 2)}
    Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    print(f"median request -> champion {result['median_to_champion_s']} s, -> final record "
          f"{result['median_to_final_s']} s; wrote {args.json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
