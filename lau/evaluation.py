"""Typed evaluation records (interim: wraps lau.pipeline's dicts until the bounded-cost evaluation lands)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lau.features import FeatureSet
from lau.models import SplitModel


@dataclass(frozen=True)
class ModelEvaluation:
    metrics: dict[str, Any]
    per_class_train_acc: list[float | None]
    per_class_test_acc: list[float | None]
    confusion_test: list[list[int]]

    def to_json(self) -> dict:
        return {"metrics": self.metrics, "per_class_train_acc": self.per_class_train_acc,
                "per_class_test_acc": self.per_class_test_acc, "confusion_test": self.confusion_test}

    @classmethod
    def from_json(cls, data: dict) -> ModelEvaluation:
        return cls(dict(data["metrics"]), list(data["per_class_train_acc"]), list(data["per_class_test_acc"]),
                   [list(r) for r in data["confusion_test"]])


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    before: ModelEvaluation
    after: ModelEvaluation
    seconds: float

    def to_json(self) -> dict:
        return {"metrics": self.metrics, "before": self.before.to_json(), "after": self.after.to_json(),
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict) -> Evaluation:
        return cls(dict(data["metrics"]), ModelEvaluation.from_json(data["before"]),
                   ModelEvaluation.from_json(data["after"]), float(data.get("seconds", 0.0)))


def evaluate_candidate(parent: SplitModel, candidate: SplitModel, features: FeatureSet,
                       forgotten: tuple[int, ...]) -> Evaluation:
    from lau import pipeline

    raw = pipeline.evaluate_candidate(parent, candidate, features, forgotten)
    return Evaluation(raw["metrics"], ModelEvaluation.from_json(raw["before"]),
                      ModelEvaluation.from_json(raw["after"]), raw["evaluate_s"])


def evaluate_model(model: SplitModel, features: FeatureSet, forgotten: tuple[int, ...] = ()) -> ModelEvaluation:
    from lau import pipeline

    return ModelEvaluation.from_json(pipeline.train_metrics(model, features, forgotten))
