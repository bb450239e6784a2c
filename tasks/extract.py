"""Feature extraction scaled out: the subflow `extract features` maps a shard task over index ranges
on the task runner that params.yaml's ``runner:`` names, and merges the shards in order.

- ``runner.kind: local``: a one-thread pool in this process (torch already uses every core per op).
- ``runner.kind: dask``: ``prefect_dask.DaskTaskRunner`` on the cluster at ``runner.address``, or on a
  local cluster of ``runner.n_workers`` worker processes started for the run and stopped after it.

The shards read their inputs from, and write their features to, a folder inside the feature cache
(a checkpoint of the model and the split's images): only paths travel to the workers. Workers on
other machines therefore need the work dir (``LAU_WORK_DIR``) on a shared volume.

The merged features equal ``lau.features.extract`` in this process bit for bit: shard bounds fall
on its batch boundaries (``lau.shards``), and every shard runs with this process's torch thread
count, because MKL's matrix products round differently with another number of threads.

Benchmark (single process vs local runner vs Dask with 1 and 2 workers), see ``bench --help``:

    .venv/bin/python -m tasks.extract bench --workers 1,2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from prefect import flow, task, unmapped
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from lau import shards
from lau.config import Params, RunnerConfig
from lau.data import Split
from lau.features import FeatureSet, cache_key
from lau.models import SplitModel
from lau.shards import Shard
from lau.utils import progress
from tasks.common import MATH


def task_runner(runner: RunnerConfig) -> Any:
    """The Prefect task runner that params.yaml's ``runner:`` section names."""
    if runner.kind == "local":
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if runner.address:
        return DaskTaskRunner(address=runner.address)
    # One task at a time per worker process; loopback only; any free port for the status page.
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": runner.n_workers, "threads_per_worker": 1,
                                          "processes": True, "host": "127.0.0.1", "dashboard_address": ":0"})


@task(name="extract shard", task_run_name="extract {shard}", **MATH)
def extract_shard(shard: Shard, shard_dir: str, depth: int, batch_size: int, threads: int) -> str:
    """F_f of one shard's images, written into the shard folder; returns the file's path."""
    return str(shards.extract_shard_file(shard, shard_dir, depth, batch_size, threads))


@flow(name="extract features", flow_run_name="extract {depth}-deep features in {shard_size}-image shards")
def extract_features_flow(shard_dir: str, counts: dict[str, int], depth: int, batch_size: int,
                          shard_size: int, threads: int) -> dict[str, torch.Tensor]:
    """Map ``extract shard`` over every shard of the train and test images; merge each set in order."""
    planned = shards.plan_shards(counts, shard_size, batch_size)
    progress(f"[extract] {sum(counts.values())} images in {len(planned)} shards, {threads} torch threads each")
    futures = extract_shard.map(planned, unmapped(shard_dir), unmapped(depth), unmapped(batch_size),
                                unmapped(threads))
    wait(futures)  # every shard settles before anything is read (or the folder is removed)
    paths = futures.result()  # raises the first shard's failure
    tensors = [shards.read_shard_file(path) for path in paths]
    return {part: shards.merge(planned, tensors, part, counts.get(part, 0)) for part in shards.PARTS}


def extract_sharded(params: Params, model: SplitModel, split: Split, data_version: str, *,
                    cache_dir: str | Path, depth: int | None = None, runner: RunnerConfig | None = None,
                    threads: int | None = None) -> FeatureSet:
    """``lau.pipeline.featurize`` through the `extract features` subflow; the same FeatureSet, bit for bit.

    ``cache_dir`` is the cache key's folder: the shards live in a private subfolder of it for the
    duration of the run. ``runner`` defaults to ``params.runner``, ``threads`` to this process's
    torch thread count (another count gives other bits for models with a linear layer in F_f).
    """
    depth = depth or params.unlearn.depth
    model.check_depth(depth)
    runner = runner or params.runner
    threads = threads or torch.get_num_threads()
    shard_dir = Path(cache_dir) / "shards" / uuid.uuid4().hex[:12]  # private: concurrent runs never mix
    try:
        shards.write_inputs(model, {"train": split.train_images, "test": split.test_images}, depth, shard_dir)
        counts = {"train": len(split.train_images), "test": len(split.test_images)}
        subflow = extract_features_flow.with_options(task_runner=task_runner(runner))
        features = subflow(str(shard_dir), counts, depth, params.features.batch_size, runner.shard_size, threads)
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # still in use by a concurrent extraction: it removes it
            shard_dir.parent.rmdir()
    return FeatureSet(cache_key(model, depth, data_version), depth, features["train"], split.train_labels.clone(),
                      features["test"], split.test_labels.clone())


# ---------------------------------------------------------------- benchmark


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.extract",
                                     description="Sharded feature extraction: benchmark of the task runners.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bench", help="extraction throughput: single process, local runner, Dask workers")
    p.add_argument("--dataset", default="mnist5k", help="dataset of lau.data (default mnist5k)")
    p.add_argument("--max-per-class", type=int, default=0, help="cap on images per class (0 = all)")
    p.add_argument("--arch", default="cnn", help="backbone (default cnn)")
    p.add_argument("--batch-size", type=int, default=Params().features.batch_size, help="images per forward pass")
    p.add_argument("--shard-size", type=int, default=Params().runner.shard_size,
                   help="images per shard (rounded up to whole batches)")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                   help="Dask worker counts to try, e.g. 1,2")
    p.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="torch threads per Dask worker to try, e.g. 2,1 (default: this process's count, "
                        "the only one that is bit-identical)")
    p.add_argument("--repeat", type=int, default=3, help="runs per row: the first is cold, the best other one warm")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = bench(args)
    print(table(rows, args))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
