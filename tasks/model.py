"""The math steps as Prefect tasks: thin wrappers over lau.pipeline, no retries, no I/O."""

from __future__ import annotations

from prefect import task

from lau.config import GateConfig, Params
from lau.data import Split
from lau.features import FeatureSet
from lau.gate import Verdict, verify
from lau.models import SplitModel
from lau.pipeline import Unlearned, evaluate_candidate, train_metrics, train_original, unlearn_classes
from tasks.common import MATH


@task(name="train original model", **MATH)
def train(params: Params, split: Split) -> SplitModel:
    return train_original(params, split)


@task(name="evaluate original model", **MATH)
def evaluate_original(model: SplitModel, features: FeatureSet) -> dict:
    return train_metrics(model, features)


@task(name="LAU on the forget features", **MATH)
def unlearn(params: Params, parent: SplitModel, features: FeatureSet, classes: tuple[int, ...],
            already_forgotten: tuple[int, ...], excluded: tuple[int, ...]) -> Unlearned:
    return unlearn_classes(params, parent, features, classes, already_forgotten, excluded)


@task(name="evaluate candidate", **MATH)
def evaluate(parent: SplitModel, candidate: SplitModel, features: FeatureSet,
             forgotten: tuple[int, ...]) -> dict:
    return evaluate_candidate(parent, candidate, features, forgotten)


@task(name="verification gate", **MATH)
def gate(metrics: dict, cfg: GateConfig) -> Verdict:
    return verify(metrics, cfg)
