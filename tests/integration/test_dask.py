"""Sharded feature extraction through Prefect on a real Dask cluster equals single-process extraction.

Prefect talks to the stack's server when PREFECT_API_URL is set (`make test` sources .stack/env), else
to a temporary one (prefect_test_harness). The model is the shared small CNN of tests/conftest.py
(mnist5k, 150 images per class); small batches and shards make several shards per set.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lau.config import Params, RunnerConfig
from lau.data import Split
from lau.features import FeatureSet, extract_features
from lau.models import SplitModel

pytestmark = [pytest.mark.dask, pytest.mark.slow]

BATCH = 128
SHARD = 200  # rounded up to 256: 5 train shards (1,200 images) and 2 test shards (300)


@pytest.fixture(scope="module", autouse=True)
def prefect_api() -> Iterator[None]:
    """The stack's Prefect server when configured, else a temporary one for this module."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture(scope="module")
def params() -> Params:
    base = Params()
    return dataclasses.replace(base, features=dataclasses.replace(base.features, batch_size=BATCH))


@pytest.fixture(scope="module")
def reference(trained_model: SplitModel, small_split: Split) -> FeatureSet:
    """``lau.features.extract`` in this process: the bits every runner must reproduce."""
    return extract_features(trained_model, small_split, 1, "tests", BATCH)


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A real local Dask cluster: a scheduler and 2 worker processes of one thread each."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as running:
        yield running


def assert_identical(features: FeatureSet, reference: FeatureSet) -> None:
    assert features.key == reference.key and features.depth == reference.depth
    assert torch.equal(features.train_labels, reference.train_labels)
    assert torch.equal(features.test_labels, reference.test_labels)
    assert features.train_features.shape == reference.train_features.shape
    assert torch.equal(features.train_features, reference.train_features)  # bit for bit, not allclose
    assert torch.equal(features.test_features, reference.test_features)


def test_two_dask_workers_extract_the_single_process_features_bit_for_bit(
        params: Params, trained_model: SplitModel, small_split: Split, reference: FeatureSet,
        cluster: object, tmp_path: Path) -> None:
    from distributed import Client, get_task_stream

    from tasks.extract import extract_sharded

    runner = RunnerConfig(kind="dask", address=cluster.scheduler_address, shard_size=SHARD)
    with Client(cluster.scheduler_address) as client, get_task_stream(client) as stream:
        features = extract_sharded(params, trained_model, small_split, "tests", cache_dir=tmp_path,
                                   runner=runner)
    assert_identical(features, reference)
    workers = {entry["worker"] for entry in stream.data}
    assert len(workers) == 2, f"the 7 shards ran on {workers}; expected both workers to take some"
    assert not (tmp_path / "shards").exists()  # shard files are merged, then removed


def test_dask_runner_from_params_starts_and_stops_its_own_cluster(
        params: Params, trained_model: SplitModel, small_split: Split, reference: FeatureSet,
        tmp_path: Path) -> None:
    from tasks.extract import extract_sharded

    runner = RunnerConfig(kind="dask", address="", n_workers=2, shard_size=SHARD)  # runner: in params.yaml
    features = extract_sharded(dataclasses.replace(params, runner=runner), trained_model, small_split, "tests",
                               cache_dir=tmp_path)
    assert_identical(features, reference)


def test_local_runner_extracts_the_same_features(params: Params, trained_model: SplitModel,
                                                 small_split: Split, reference: FeatureSet,
                                                 tmp_path: Path) -> None:
    from tasks.extract import extract_sharded

    runner = RunnerConfig(kind="local", shard_size=SHARD)
    assert_identical(extract_sharded(params, trained_model, small_split, "tests", cache_dir=tmp_path,
                                     runner=runner), reference)
