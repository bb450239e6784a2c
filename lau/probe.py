"""The linear probe as a cacheable record: fitted once, scored on every test image, kept per class.

The probe is trained on the penultimate features of the training images (every class, the
forgotten ones included) and scored on the forgotten classes' test images. Its fit does not depend
on which classes are forgotten, and at depth 1 every model of a lineage reads the same penultimate
features (the cached ones), so one ``ProbeRecord`` per (feature cache, ``evaluation.probe_sample``,
``evaluation.seed``) answers every deletion of that lineage: ``record.result(forgotten)``.
A depth-2+ candidate has features of its own; its record is fitted for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lau.config import EvaluationConfig
from lau.features import FeatureSet
from lau.metrics import ProbeResult, fit_probe, head_outputs, non_finite_rows, stratified_sample
from lau.models import SplitModel

CHUNK = 65_536  # test rows scored at a time


@dataclass(frozen=True)
class ProbeRecord:
    """Per class, how many test images the probe classified right, out of how many."""

    test_correct: tuple[int, ...]
    test_total: tuple[int, ...]
    train_images: int  # the stratified sample it was fitted on
    fitted: bool = True  # False: the penultimate features held NaN or infinities
    features_key: str = ""
    depth: int = 1
    settings: dict[str, int] = field(default_factory=dict)  # probe_sample, seed

    def result(self, forgotten: tuple[int, ...]) -> ProbeResult:
        """The probe's accuracy on the test images of ``forgotten``, pooled."""
        total = sum(self.test_total[c] for c in forgotten)
        correct = sum(self.test_correct[c] for c in forgotten)
        accuracy = 100.0 * correct / total if self.fitted and total else float("nan")
        return ProbeResult(accuracy, self.train_images, total)

    def per_class_acc(self) -> list[float | None]:
        return [round(100.0 * c / n, 4) if n and self.fitted else None
                for c, n in zip(self.test_correct, self.test_total)]

    def to_json(self) -> dict[str, Any]:
        return {"test_correct": list(self.test_correct), "test_total": list(self.test_total),
                "train_images": self.train_images, "fitted": self.fitted, "features_key": self.features_key,
                "depth": self.depth, "settings": dict(self.settings)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeRecord:
        return cls(tuple(data["test_correct"]), tuple(data["test_total"]), data["train_images"],
                   data["fitted"], data["features_key"], data["depth"], dict(data["settings"]))


def probe_record_key(features_key: str, cfg: EvaluationConfig) -> str:
    """Where a depth-1 record may be cached: it depends on the feature cache and these settings only."""
    return f"{features_key}-probe-{cfg.probe_sample}-seed-{cfg.seed}"


def probe_settings(cfg: EvaluationConfig) -> dict[str, int]:
    return {"probe_sample": cfg.probe_sample, "seed": cfg.seed}


def probe_record(model: SplitModel, features: FeatureSet, cfg: EvaluationConfig) -> ProbeRecord:
    """Fit the probe on ``model``'s penultimate features of a stratified sample of at most
    ``cfg.probe_sample`` training images (class shares as in the data) and score every test image."""
    num_classes, depth = model.spec.num_classes, features.depth
    rows = stratified_sample(features.train_labels, cfg.probe_sample, cfg.seed + 20)
    everything = len(rows) == len(features.train_labels)
    train_feats = features.train_features if everything else features.train_features[rows]
    _, train_pre = head_outputs(model, depth, train_feats)
    predict = fit_probe(train_pre, features.train_labels[rows])
    del train_feats, train_pre
    correct = torch.zeros(num_classes, dtype=torch.int64)
    fitted = predict is not None
    for start in range(0, len(features.test_labels) if fitted else 0, CHUNK):
        labels = features.test_labels[start: start + CHUNK]
        _, test_pre = head_outputs(model, depth, features.test_features[start: start + CHUNK])
        if non_finite_rows(test_pre):
            fitted = False
            break
        predicted = torch.from_numpy(predict(test_pre)).to(labels.dtype)
        correct += torch.bincount(labels[predicted == labels], minlength=num_classes)
    total = torch.bincount(features.test_labels, minlength=num_classes)
    return ProbeRecord(tuple(correct.tolist()), tuple(total.tolist()), len(rows), fitted, features.key, depth,
                       probe_settings(cfg))


def check_probe(record: ProbeRecord, features: FeatureSet, cfg: EvaluationConfig) -> None:
    """ValueError unless ``record`` was fitted on these features with these settings."""
    expected = (features.key, features.depth, probe_settings(cfg))
    actual = (record.features_key, record.depth, record.settings)
    if actual != expected:
        raise ValueError(f"probe record is for (features, depth, settings) = {actual}, not {expected}")
