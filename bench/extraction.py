"""Feature extraction throughput: one process, the local task runner, Dask clusters (`lau bench --extraction`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lau.config import Params, RunnerConfig
from lau.utils import progress
from tasks.extract import extract_sharded


def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time single-process extraction, the local runner and Dask clusters of each worker count."""
    import dataclasses
    import tempfile
    from functools import partial

    from distributed import LocalCluster

    from lau.config import DataConfig, ModelConfig
    from lau.data import prepare
    from lau.features import extract_features
    from lau.train import new_model

    params = Params()
    params = dataclasses.replace(params, features=dataclasses.replace(params.features, batch_size=args.batch_size))
    split = prepare(DataConfig(dataset=args.dataset, max_per_class=args.max_per_class))
    model = new_model(split, ModelConfig(arch=args.arch), seed=0)  # untrained: speed does not depend on weights
    images = len(split.train_images) + len(split.test_images)
    threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    reference = extract_features(model, split, 1, "bench", args.batch_size)

    def measure(runner: str, workers: int, per_worker: int, start_s: float, run: Any) -> None:
        times, features = [], None
        for _ in range(args.repeat):
            began = time.perf_counter()
            features = run()
            times.append(time.perf_counter() - began)
        warm = min(times[1:] or times)  # the best of the warm runs: the least disturbed by other jobs
        equal = (torch.equal(features.train_features, reference.train_features)
                 and torch.equal(features.test_features, reference.test_features))
        rows.append({"runner": runner, "workers": workers, "threads_per_worker": per_worker,
                     "start_s": round(start_s, 2), "cold_s": round(times[0], 2), "warm_s": round(warm, 2),
                     "images_per_s": round(images / warm, 1), "bit_identical": equal})
        progress(f"[bench] {rows[-1]}")

    with tempfile.TemporaryDirectory(prefix="lau-bench-extract-") as scratch:
        measure("single process", 1, threads, 0.0,
                partial(extract_features, model, split, 1, "bench", args.batch_size))
        sharded = partial(extract_sharded, params, model, split, "bench", cache_dir=scratch)
        measure("local (thread pool)", 1, threads, 0.0,
                partial(sharded, runner=RunnerConfig(kind="local", shard_size=args.shard_size)))
        for workers in args.workers:
            for per_worker in args.threads or [threads]:
                began = time.perf_counter()
                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster:
                    start_s = time.perf_counter() - began
                    runner = RunnerConfig(kind="dask", address=cluster.scheduler_address, shard_size=args.shard_size)
                    measure("dask", workers, per_worker, start_s, partial(sharded, runner=runner, threads=per_worker))
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    head = (f"Feature extraction, {args.dataset} (max_per_class {args.max_per_class}), {args.arch}, depth 1, "
            f"batch {args.batch_size}, shards of {args.shard_size}; {os.cpu_count()} CPUs, load average {load} "
            f"at the end; cold = first run (workers import torch), warm = best of runs 2-{args.repeat}")
    lines = [head, "",
             "| runner | workers | torch threads / worker | cluster start s | cold s | warm s | images/s (warm) "
             "| equal to single process |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['runner']} | {r['workers']} | {r['threads_per_worker']} | {r['start_s']:.2f} | "
                     f"{r['cold_s']:.2f} | {r['warm_s']:.2f} | {r['images_per_s']:.0f} | "
                     f"{'yes' if r['bit_identical'] else 'NO'} |")
    return "\n".join(lines)


def run_extraction_bench(workers: list[int], json_path: str, *, dataset: str = "mnist5k", arch: str = "cnn",
                         max_per_class: int = 0, shard_size: int | None = None, repeat: int = 3) -> int:
    """`lau bench --extraction`: the table on stderr, JSON and markdown at ``json_path``."""
    args = argparse.Namespace(dataset=dataset, arch=arch, max_per_class=max_per_class,
                              batch_size=Params().features.batch_size,
                              shard_size=shard_size or Params().runner.shard_size, workers=workers, threads=None,
                              repeat=repeat)
    rows = bench(args)
    text = table(rows, args)
    print(text, file=sys.stderr)
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    path.with_suffix(".md").write_text(text + "\n")
    return 0
