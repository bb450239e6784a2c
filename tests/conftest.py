"""Shared fixtures: one small trained model and its feature caches, built once per test session.

The session-scoped objects are shared by many tests: never mutate them. Tests that change a model
take the function-scoped ``model`` fixture, a fresh copy (``lau.models.clone``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lau.config import DataConfig, Params
from lau.data import Split, prepare
from lau.features import FeatureSet, extract_features
from lau.models import SplitModel, clone
from lau.train import fit, new_model

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """One thread per native pool (PyTorch, OpenMP, the BLAS under scikit-learn): on a small, shared
    machine their default threads spin-wait on tiny ops. Measured on 2 cores with other jobs running:
    the engine suite took 2.5 min instead of 30 s, one linear probe 1.7 s instead of 0.03 s."""
    import sklearn.linear_model  # noqa: F401  (loads SciPy's BLAS, so that the limit reaches it)
    import sklearn.svm  # noqa: F401
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


# The slowest files first (seconds of one file's tests, `make test`'s phase 1 with --durations=0 on a
# quiet machine): pytest-xdist hands a worker the next file when it has two tests left, so with the
# long files at the end one worker finished a long file alone while the other idled (684 s in all).
SLOWEST_FIRST = ("integration/test_dvc.py", "integration/test_flows.py", "reliability/test_exactly_once.py",
                 "integration/test_adopt_flow.py", "integration/test_erasure.py", "integration/test_workpool.py",
                 "integration/test_dashboard.py", "integration/test_stack.py", "integration/test_dask.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Collection order, except that the files in SLOWEST_FIRST come first, in that order (every
    worker sorts alike, so their collections stay identical)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}

    def key(item: pytest.Item) -> int:
        relative = item.path.relative_to(REPO / "tests").as_posix() if item.path.is_relative_to(REPO / "tests") else ""
        return rank.get(relative, len(rank))

    items.sort(key=key)  # stable: within a file and among the others, pytest's order


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def small_params() -> Params:
    """Defaults of params.yaml's dataclasses, shrunk: mnist5k with 150 images per class, 3 epochs."""
    params = Params()
    return dataclasses.replace(params, data=DataConfig(dataset="mnist5k", max_per_class=150),
                               train=dataclasses.replace(params.train, epochs=3))


@pytest.fixture(scope="session")
def small_split(small_params: Params) -> Split:
    """1,200 train / 300 test images, 10 classes (shared: do not mutate)."""
    return prepare(small_params.data)


@pytest.fixture(scope="session")
def trained_model(small_params: Params, small_split: Split) -> SplitModel:
    """The default CNN trained on ``small_split`` (shared: do not mutate; use ``model``)."""
    model = new_model(small_split, small_params.model, small_params.train.seed)
    return fit(model, small_split.train_images, small_split.train_labels, small_params.train)


@pytest.fixture
def model(trained_model: SplitModel) -> SplitModel:
    """A fresh copy of the shared trained model, free to modify."""
    return clone(trained_model)


@pytest.fixture(scope="session")
def feature_sets(trained_model: SplitModel, small_split: Split) -> Callable[[int], FeatureSet]:
    """``feature_sets(depth)``: the shared model's cached features at that depth, extracted once."""
    cache: dict[int, FeatureSet] = {}

    def get(depth: int) -> FeatureSet:
        if depth not in cache:
            cache[depth] = extract_features(trained_model, small_split, depth, "tests")
        return cache[depth]

    return get


@torch.inference_mode()
def serve_logits(model: SplitModel, images: torch.Tensor) -> torch.Tensor:
    """Logits of uint8 images through the whole model, as a serving client sees them (eval mode)."""
    from lau.data import to_float

    return model.eval()(to_float(images))
