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

Benchmark (single process vs local runner vs Dask with 1 and 2 workers): ``lau bench --extraction``
(bench/extraction.py).
"""

from __future__ import annotations

import contextlib
import shutil
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
from tasks.policy import MATH


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
