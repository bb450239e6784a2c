"""A model's evaluation as typed records: what the gate judges, the report shows and the registry keeps.

    train_metrics(model, features)                     -> ModelEvaluation (train time: accuracies)
    probe_record(model, features, cfg)                 -> ProbeRecord (lau.probe; once per feature cache)
    evaluate_parent(parent, features, forgotten, probe=...)  -> ModelEvaluation (the parent's side)
    evaluate_candidate(parent, candidate, features, forgotten, parent_side=...) -> Evaluation

The evidence reads seeded, class-stratified samples capped by ``evaluation.*`` (params.yaml), the
same images for the parent and the candidate, so its cost does not grow with the dataset; forget
images are always all read, because the gate requires every one of them to be forgotten. The
parent's side depends only on (parent, feature cache, forgotten classes, evaluation settings), so a
caller may compute it once, keep its JSON beside the features (``parent_side_key``), and pass it back;
the probe, its slowest part, depends on even less (``lau.probe``) and is cached on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from lau.config import EvaluationConfig
from lau.data import class_mask
from lau.features import FeatureSet
from lau.metrics import (
    ProbeResult,
    accuracy,
    confusion_matrix,
    evaluate,
    head_outputs,
    non_finite_rows,
    outputs_from_features,
    per_class_accuracy,
    stratified_sample,
)
from lau.models import SplitModel
from lau.probe import ProbeRecord, check_probe, probe_record
from lau.utils import json_safe, torch_threads


@dataclass(frozen=True)
class ModelEvaluation:
    """One model's metrics on one feature cache, with per-class accuracies and the test confusion."""

    metrics: dict[str, Any]  # CONTRACT metrics and sample sizes (train time: train_acc, test_acc)
    per_class_train_acc: tuple[float | None, ...]
    per_class_test_acc: tuple[float | None, ...]
    confusion_test: tuple[tuple[int, ...], ...]  # (true class, predicted class) counts
    forgotten: tuple[int, ...] = ()  # the classes the metrics treat as forgotten
    features_key: str = ""  # the feature cache it was computed on
    settings: dict[str, int] = dataclasses.field(default_factory=dict)  # EvaluationConfig used

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (NaN as null); ``from_json`` gives back an equal record."""
        return json_safe({"metrics": self.metrics, "per_class_train_acc": self.per_class_train_acc,
                          "per_class_test_acc": self.per_class_test_acc, "confusion_test": self.confusion_test,
                          "forgotten": self.forgotten, "features_key": self.features_key,
                          "settings": self.settings})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelEvaluation:
        return cls(metrics={k: float("nan") if v is None else v for k, v in data["metrics"].items()},
                   per_class_train_acc=tuple(data["per_class_train_acc"]),
                   per_class_test_acc=tuple(data["per_class_test_acc"]),
                   confusion_test=tuple(tuple(row) for row in data["confusion_test"]),
                   forgotten=tuple(data.get("forgotten", ())), features_key=data.get("features_key", ""),
                   settings=dict(data.get("settings", {})))


@dataclass(frozen=True)
class Evaluation:
    """A candidate's CONTRACT metrics (``after.metrics``, its retain drop against the parent), the
    parent's and the candidate's evaluations for the plots, and the seconds it took."""

    metrics: dict[str, Any]
    before: ModelEvaluation
    after: ModelEvaluation
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"metrics": json_safe(self.metrics), "before": self.before.to_json(),
                "after": self.after.to_json(), "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        after = ModelEvaluation.from_json(data["after"])
        return cls(after.metrics, ModelEvaluation.from_json(data["before"]), after, data["seconds"])


def evaluation_rows(features: FeatureSet, forgotten: tuple[int, ...],
                    cfg: EvaluationConfig) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(train rows, test rows) an evaluation reads: every forget image, and a seeded stratified
    sample of at most ``cfg.retain_sample`` retain images per split (None: every row, no copy)."""
    def rows(labels: torch.Tensor, seed: int) -> torch.Tensor | None:
        forget = class_mask(labels, forgotten)
        retain = torch.nonzero(~forget).flatten()
        picked = retain[stratified_sample(labels[retain], cfg.retain_sample, seed)]
        if len(picked) == len(retain):
            return None
        return torch.sort(torch.cat([torch.nonzero(forget).flatten(), picked])).values

    return rows(features.train_labels, cfg.seed + 10), rows(features.test_labels, cfg.seed + 11)


def evaluate_parent(parent: SplitModel, features: FeatureSet, forgotten: tuple[int, ...],
                    cfg: EvaluationConfig = EvaluationConfig(), *,
                    probe: ProbeRecord | None = None) -> ModelEvaluation:
    """The parent's side of a deletion's evaluation; cacheable (see module doc). ``probe``: the
    parent's probe record, read from a cache (``lau.probe``); fitted here when None (the slow part)."""
    with torch_threads(1):  # sampled, small products: one thread beats two on a busy machine
        if probe is None:
            probe = probe_record(parent, features, cfg)
        check_probe(probe, features, cfg)
        return _evaluate_model(parent, features, forgotten, cfg, probe_result=probe.result(forgotten))


def evaluate_candidate(parent: SplitModel, candidate: SplitModel, features: FeatureSet,
                       forgotten: tuple[int, ...], *, parent_side: ModelEvaluation | None = None,
                       probe: ProbeRecord | None = None, cfg: EvaluationConfig = EvaluationConfig()) -> Evaluation:
    """Every CONTRACT metric of the candidate, with the parent scored on the same images.

    ``parent_side``: ``evaluate_parent(parent, features, forgotten, cfg)`` computed earlier (e.g. read
    from a cache); it must match ``features``, ``forgotten`` and ``cfg``, else ValueError. ``probe``:
    the parent's probe record, used when ``parent_side`` is computed here. At depth 1 the candidate's
    penultimate features are the cached ones, so the parent's probe answers for it too; at depth 2+
    the candidate's own probe is fitted.
    """
    start = time.perf_counter()
    if parent_side is None:
        parent_side = evaluate_parent(parent, features, forgotten, cfg, probe=probe)
    check_parent_side(parent_side, features, forgotten, cfg)
    with torch_threads(1):
        own_probe = _probe_of(parent_side) if features.depth == 1 else \
            probe_record(candidate, features, cfg).result(forgotten)
        after = _evaluate_model(candidate, features, forgotten, cfg, probe_result=own_probe,
                                original_test_retain_acc=parent_side.metrics["test_retain_acc"])
    return Evaluation(after.metrics, parent_side, after, round(time.perf_counter() - start, 4))


def check_parent_side(parent_side: ModelEvaluation, features: FeatureSet, forgotten: tuple[int, ...],
                      cfg: EvaluationConfig) -> None:
    """ValueError unless ``parent_side`` was computed on these features, classes and settings."""
    expected = (features.key, tuple(sorted(forgotten)), dataclasses.asdict(cfg))
    actual = (parent_side.features_key, tuple(sorted(parent_side.forgotten)), parent_side.settings)
    if actual != expected:
        raise ValueError(f"parent_side is for (features, forgotten, settings) = {actual}, not {expected}")


def parent_side_key(parent_weights_sha256: str, features_key: str, forgotten: tuple[int, ...],
                    cfg: EvaluationConfig) -> str:
    """The cache address of ``evaluate_parent``'s result: a hash of everything it depends on."""
    payload = json.dumps({"parent": parent_weights_sha256, "features": features_key,
                          "forgotten": sorted(forgotten), "settings": dataclasses.asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def train_metrics(model: SplitModel, features: FeatureSet, forgotten: tuple[int, ...] = (),
                  cfg: EvaluationConfig = EvaluationConfig()) -> ModelEvaluation:
    """A freshly trained model: train (and validation, when the cache has it) and test accuracy on
    every image, per class and confusion. With ``forgotten`` (a retrain of a lineage), the full
    evaluation of ``evaluate_parent``."""
    if forgotten:
        return evaluate_parent(model, features, forgotten, cfg)
    k = model.spec.num_classes
    train_logits, _ = head_outputs(model, features.depth, features.train_features)
    test_logits, _ = head_outputs(model, features.depth, features.test_features)
    metrics: dict[str, Any] = {"train_acc": accuracy(train_logits, features.train_labels),
                               "test_acc": accuracy(test_logits, features.test_labels)}
    val_features = getattr(features, "val_features", None)  # the validation split, where the cache has one
    if val_features is not None and len(val_features):
        metrics["val_acc"] = accuracy(head_outputs(model, features.depth, val_features)[0], features.val_labels)
    non_finite = non_finite_rows(train_logits, test_logits)
    metrics = {key: float("nan") if non_finite else round(value, 4) for key, value in metrics.items()}
    metrics["non_finite_outputs"] = non_finite
    return ModelEvaluation(metrics, tuple(per_class_accuracy(train_logits, features.train_labels, k)),
                           tuple(per_class_accuracy(test_logits, features.test_labels, k)),
                           _frozen(confusion_matrix(test_logits, features.test_labels, k)),
                           features_key=features.key)


def _evaluate_model(model: SplitModel, features: FeatureSet, forgotten: tuple[int, ...], cfg: EvaluationConfig,
                    *, original_test_retain_acc: float | None = None,
                    probe_result: ProbeResult | None = None) -> ModelEvaluation:
    train_rows, test_rows = evaluation_rows(features, forgotten, cfg)
    outputs = outputs_from_features(model, features, train_rows, test_rows)
    result = evaluate(outputs, forgotten, model.spec.num_classes, cfg=cfg, with_probe=False,
                      original_test_retain_acc=original_test_retain_acc, probe_result=probe_result)
    return ModelEvaluation(result["metrics"], tuple(result["per_class_train_acc"]),
                           tuple(result["per_class_test_acc"]), _frozen(result["confusion_test"]),
                           tuple(sorted(forgotten)), features.key, dataclasses.asdict(cfg))


def _probe_of(side: ModelEvaluation) -> ProbeResult:
    metrics = side.metrics
    return ProbeResult(metrics["probe_forget_acc"], metrics["probe_train_images"], metrics["probe_test_images"])


def _frozen(matrix: list[list[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(row) for row in matrix)
