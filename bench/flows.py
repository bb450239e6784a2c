"""Deletion flows timed end to end, as a user runs them: `lau train`, then one `lau forget` per class,
each its own process; the first on a cold feature cache (the lineage's cache removed, as after an
eviction or with a model trained elsewhere), the later ones on the cache the first one wrote.

    lau bench --flow --arch cnn --classes 3,5 --json docs/bench/flow_cnn.json     (needs `make up`)

``--via process`` files one request per class (`lau request add`) and runs one `lau process`,
as the scheduled deployment does: the deletions then share a process, and each is timed by the
flow (total_s per request); wall time is the whole pass.

Runs on a private copy of params.yaml and a private work folder under a new model name. Writes JSON
and a markdown table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lau.errors import BadInput
from tasks.context import Context
from tasks.features import s3_key


def run_lau(args: list[str], env: dict[str, str]) -> tuple[dict, float]:
    """One `lau ... --json` in its own process: (its JSON, wall seconds)."""
    lau = Path(sys.executable).with_name("lau")
    start = time.perf_counter()
    done = subprocess.run([str(lau), *args, "--json"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"lau {' '.join(args)} exited {done.returncode}: {tail[0]}")
    return json.loads(done.stdout), wall


def drop_cache(model: str, env: dict[str, str]) -> str:
    """Remove the champion lineage's feature cache, local and on S3; returns its key."""
    os.environ.update(env)
    ctx = Context.load(model)
    key = ctx.registry.require_champion().tag("feature_cache_key")
    shutil.rmtree(ctx.settings.feature_dir / key, ignore_errors=True)
    if ctx.storage.exists(s3_key(key)):
        ctx.storage.delete(s3_key(key))
    return key


def _row(cls: str, i: int, out: dict, wall: float | None) -> dict:
    timings = out.get("timings") or {}
    metrics = out.get("metrics") or {}
    return {"classes": cls, "cache": "cold" if i == 0 else "warm", "status": out["status"],
            "version": out.get("version"), "wall_s": None if wall is None else round(wall, 2), **timings,
            "forget_acc": metrics.get("forget_acc"), "test_forget_acc": metrics.get("test_forget_acc")}


def time_flows(classes_text: str, via: str, json_path: str, *, arch: str | None = None,
               dataset: str | None = None, epochs: int | None = None) -> int:
    """Train a private model, drop its feature cache, then time one deletion per class."""
    classes = [c.strip() for c in classes_text.split(",") if c.strip()]
    if len(classes) < 2:
        raise BadInput("--flow needs --classes with two or more classes: a cold deletion and a warm one")
    rows, result = _time(classes, via, arch, dataset, epochs)
    _write(result, rows, via, Path(json_path))
    return 0


def _time(classes: list[str], via: str, arch: str | None, dataset: str | None,
          epochs: int | None) -> tuple[list[dict], dict]:
    model = f"timing-{arch or 'default'}-{time.strftime('%Y%m%d%H%M%S')}"
    tmp = Path(tempfile.mkdtemp(prefix="lau-timing-"))
    params = tmp / "params.yaml"
    shutil.copy(os.environ.get("LAU_PARAMS", "params.yaml"), params)
    env = {**os.environ, "LAU_PARAMS": str(params), "LAU_WORK_DIR": str(tmp / "work")}

    train_args = ["train", "--model", model]
    for flag, value in (("--arch", arch), ("--dataset", dataset), ("--epochs", epochs)):
        if value is not None:
            train_args += [flag, str(value)]
    print(f"[timing] lau {' '.join(train_args)}", file=sys.stderr, flush=True)
    trained, train_wall = run_lau(train_args, env)
    key = drop_cache(model, env)
    print(f"[timing] dropped the lineage's feature cache {key}", file=sys.stderr, flush=True)
    rows = []
    if via == "process":
        for cls in classes:
            run_lau(["request", "add", "--model", model, "--classes", cls], env)
        print(f"[timing] lau process ({len(classes)} requests, the first on a cold cache)", file=sys.stderr,
              flush=True)
        outs, wall = run_lau(["process", "--model", model], env)
        rows = [_row(cls, i, out, wall if i == 0 else None) for i, (cls, out) in enumerate(zip(classes, outs))]
    for i, cls in enumerate(classes if via == "forget" else []):
        print(f"[timing] lau forget --classes {cls} ({'cold' if i == 0 else 'warm'} cache)", file=sys.stderr,
              flush=True)
        out, wall = run_lau(["forget", "--model", model, "--classes", cls], env)
        rows.append(_row(cls, i, out, wall))
    first, later = rows[0], rows[1:]
    result = {"model": model, "arch": trained.get("arch", arch), "via": via,
              "train_wall_s": round(train_wall, 2),
              "feature_cache_key": key, "rows": rows,
              "later_extracted_nothing": all(r.get("features_source") != "extracted" for r in later),
              "speedup_total": round(first["total_s"] / max(r["total_s"] for r in later), 2),
              "speedup_wall": (round(first["wall_s"] / max(r["wall_s"] for r in later), 2)
                               if via == "forget" else None)}
    shutil.rmtree(tmp, ignore_errors=True)
    return rows, result


def _write(result: dict, rows: list[dict], via: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| deletion | cache | wall s | flow total_s | features_s (source) | unlearn_s | evaluate_s | "
             "status, version | forget / test-forget |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| classes {r['classes']} | {r['cache']} | {'-' if r['wall_s'] is None else r['wall_s']} | "
              f"{r.get('total_s')} | "
              f"{r.get('features_s')} ({r.get('features_source')}) | {r.get('unlearn_s')} | "
              f"{r.get('evaluate_s')} | {r['status']}, v{r['version']} | {r['forget_acc']} / "
              f"{r['test_forget_acc']} |" for r in rows]
    wall_note = (f", {result['speedup_wall']}x on wall time" if via == "forget"
                 else f" (one `lau process` pass: {rows[0]['wall_s']} s wall for all)")
    lines += ["", f"`lau train` {result['train_wall_s']} s wall. Cold / warm: {result['speedup_total']}x on "
                  f"the flow's total_s{wall_note}; later deletions extracted nothing: "
                  f"{result['later_extracted_nothing']}."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
