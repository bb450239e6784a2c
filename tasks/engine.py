"""The engine's steps as Prefect tasks: thin wrappers over lau/, no retries, no I/O."""

from __future__ import annotations

from prefect import task

from lau.config import GateConfig, Params
from lau.data import Split
from lau.erased import erased_evidence, erased_split
from lau.evaluation import Evaluation, ModelEvaluation, evaluate_candidate, train_metrics
from lau.features import FeatureSet
from lau.gate import Verdict, verify, verify_trained
from lau.models import SplitModel
from lau.pipeline import Unlearned, train_original, unlearn_classes
from lau.probe import ProbeRecord
from tasks.policy import MATH


@task(name="train original model", **MATH)
def train_model(params: Params, split: Split) -> SplitModel:
    return train_original(params, split)


@task(name="evaluate trained model", **MATH)
def evaluate_trained(params: Params, model: SplitModel, features: FeatureSet,
                     erased: tuple[int, ...]) -> tuple[ModelEvaluation, dict[str, float]]:
    """The model on its own data, and on the erased classes' images it was trained without."""
    evaluation = train_metrics(model, features, cfg=params.evaluation)
    images = erased_split(params.data, erased)
    return evaluation, (erased_evidence(model, features, images, erased) if images is not None else {})


@task(name="LAU on the forget features", **MATH)
def unlearn(params: Params, parent: SplitModel, features: FeatureSet, classes: tuple[int, ...],
            already_forgotten: tuple[int, ...], excluded: tuple[int, ...]) -> Unlearned:
    return unlearn_classes(params, parent, features, classes, already_forgotten, excluded)


@task(name="evaluate candidate", **MATH)
def evaluate(params: Params, parent: SplitModel, candidate: SplitModel, features: FeatureSet,
             forgotten: tuple[int, ...], parent_side: ModelEvaluation | None = None,
             probe: ProbeRecord | None = None) -> Evaluation:
    return evaluate_candidate(parent, candidate, features, forgotten, parent_side=parent_side, probe=probe,
                              cfg=params.evaluation)


@task(name="verification gate", **MATH)
def gate(metrics: dict, cfg: GateConfig) -> Verdict:
    return verify(metrics, cfg)


@task(name="verification gate (new lineage root)", **MATH)
def gate_trained(metrics: dict, cfg: GateConfig, erased: tuple[int, ...]) -> Verdict:
    return verify_trained(metrics, cfg, erased)
