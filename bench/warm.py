"""A warm deletion through the served deployment, timed from the request to the champion.

Needs the stack and a running `lau serve --model M` (its warm worker polls the ledger every
``--poll`` seconds, 0.2 by default, and keeps torch, MLflow and the caches loaded). For each class:
`lau request add` files the request; this script then polls the registry alias (every 50 ms) until
the champion moves, and reads the request's record once it is final:

    python -m bench.warm --model M --classes 1,2,4,6,9 --json docs/bench/warm.json

Per request: ``to_champion_s`` (submitted_at in the ledger -> the alias pointing at the new
version, observed), ``to_final_s`` (-> the ledger's final entry: audit report and record written),
``pickup_s`` (-> the worker marking it running) and the flow's own timings, in the order they run:
``load_s`` (the champion and its checkpoint), ``engine_gate_s`` (features, LAU, evaluation, root
accuracy, gate; ``features_s``, ``unlearn_s`` and ``evaluate_s`` are parts of it), ``register_s``
(the MLflow run's servable part and the version), ``promote_s`` (the alias), ``to_champion_s``
(from the flow's start) and ``total_s`` (plots, the run's audit part, report and record included).
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


def one(model: str, klass: int, client, timeout_s: float = 120) -> dict:  # noqa: ANN001 - an MlflowClient
    before = client.get_model_version_by_alias(model, "champion").version
    request_id = lau(model, "request", "add", "--classes", str(klass))["request_id"]
    moved_at, deadline = None, time.monotonic() + timeout_s
    while moved_at is None:
        if client.get_model_version_by_alias(model, "champion").version != before:
            moved_at = dt.datetime.now(dt.UTC)
        elif time.monotonic() > deadline:
            record = lau(model, "request", "show", request_id)
            raise SystemExit(f"class {klass}: the champion did not move within {timeout_s:g} s (request "
                             f"{request_id} is {record['status']}: {record.get('error') or 'no error'}); is "
                             f"`lau serve --model {model}` running?")
        else:
            time.sleep(0.05)
    while True:
        record = lau(model, "request", "show", request_id)
        if record["status"] in ("registered", "rejected", "failed"):
            break
        time.sleep(0.2)
    submitted = dt.datetime.fromisoformat(record["submitted_at"])
    running = next(dt.datetime.fromisoformat(h["at"]) for h in record["history"] if h["status"] == "running")
    final = dt.datetime.fromisoformat(record["history"][-1]["at"])
    return {"class": klass, "status": record["status"], "version": record.get("version"),
            "to_champion_s": round((moved_at - submitted).total_seconds(), 3),
            "to_final_s": round((final - submitted).total_seconds(), 3),
            "pickup_s": round((running - submitted).total_seconds(), 3), "timings": record.get("timings")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warm")
    parser.add_argument("--model", required=True)
    parser.add_argument("--classes", default="1,2,4,6,9")
    parser.add_argument("--json", dest="json_path", default="docs/bench/warm.json")
    args = parser.parse_args(argv)
    from mlflow import MlflowClient

    client = MlflowClient()
    rows = []
    for klass in (int(c) for c in args.classes.split(",")):
        rows.append(one(args.model, klass, client))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"model": args.model, "rows": rows,
              "median_to_champion_s": statistics.median(r["to_champion_s"] for r in rows),
              "median_to_final_s": statistics.median(r["to_final_s"] for r in rows),
              "load_1min": round(os.getloadavg()[0], 2)}
    Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    print(f"median request -> champion {result['median_to_champion_s']} s, -> final record "
          f"{result['median_to_final_s']} s; wrote {args.json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
