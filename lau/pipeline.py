"""The pipeline's stages as pure functions, shared by `dvc repro` (lau.stages) and the Prefect tasks.

prepare -> train -> featurize -> unlearn -> evaluate; both front ends call these, so a flow's
registered numbers and a `dvc repro` of the same params and data are the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lau.config import Params
from lau.data import Split, check_classes, prepare
from lau.errors import BadInput
from lau.features import FeatureSet, extract_features
from lau.metrics import evaluate, outputs_from_features
from lau.models import SplitModel
from lau.train import Trained, train_model
from lau.unlearn import LAUResult, unlearn


def prepare_data(params: Params) -> Split:
    """Bundled or on-disk dataset -> the stratified split, honouring ``data.excluded_classes``."""
    return prepare(params.data)


def train_original(params: Params, split: Split) -> SplitModel:
    """The original model, trained on the split's train images, its best epoch on validation kept."""
    return train_with_report(params, split).model


def train_with_report(params: Params, split: Split) -> Trained:
    """``train_original`` with its report: epochs run, the epoch kept, train/val/test accuracy."""
    return train_model(split, params.model, params.train, label="train")


def featurize(params: Params, model: SplitModel, split: Split, data_version: str, *,
              depth: int | None = None) -> FeatureSet:
    """F_f features of every image at ``depth`` (default ``unlearn.depth``)."""
    return extract_features(model, split, depth or params.unlearn.depth, data_version,
                            params.features.batch_size)


def train_metrics(model: SplitModel, features: FeatureSet, forgotten: tuple[int, ...] = ()) -> dict:
    """Accuracies of a model (no forgotten class yet, or its lineage's), per class and confusion."""
    outputs = outputs_from_features(model, features)
    if not forgotten:
        from lau.metrics import accuracy, confusion_matrix, per_class_accuracy

        k = model.spec.num_classes
        return {"metrics": {"train_acc": round(accuracy(outputs.train_logits, outputs.train_labels), 4),
                            "test_acc": round(accuracy(outputs.test_logits, outputs.test_labels), 4)},
                "per_class_train_acc": per_class_accuracy(outputs.train_logits, outputs.train_labels, k),
                "per_class_test_acc": per_class_accuracy(outputs.test_logits, outputs.test_labels, k),
                "confusion_test": confusion_matrix(outputs.test_logits, outputs.test_labels, k)}
    return evaluate(outputs, forgotten, model.spec.num_classes)


@dataclass(frozen=True)
class Unlearned:
    """A candidate and how it was made."""

    candidate: SplitModel
    result: LAUResult
    forget_classes: tuple[int, ...]  # this request's classes
    forgotten: tuple[int, ...]  # cumulative over the lineage, this request's included


def unlearn_classes(params: Params, parent: SplitModel, features: FeatureSet,
                    forget_classes: tuple[int, ...], already_forgotten: tuple[int, ...] = (),
                    excluded: tuple[int, ...] = ()) -> Unlearned:
    """LAU on the parent's head for ``forget_classes``; classes forgotten earlier in the lineage stay
    in D_f (protected from coming back) and are never attack targets."""
    forget_classes = check_classes(forget_classes, parent.spec.num_classes, what="forget classes",
                                   excluded=excluded)
    repeated = set(forget_classes) & set(already_forgotten)
    if repeated:
        raise BadInput(f"forget classes: {sorted(repeated)} already forgotten in this lineage")
    missing = [c for c in forget_classes
               if not (features.train_labels == c).any() or not (features.test_labels == c).any()]
    if missing:
        raise BadInput(f"forget classes: {missing} have no train or no test images in this lineage's data, "
                       "so their erasure cannot be verified")
    forgotten = tuple(sorted(set(forget_classes) | set(already_forgotten)))
    check_classes(forgotten, parent.spec.num_classes, what="forget classes (with the lineage's)",
                  excluded=excluded)
    # D_f is cumulative: samples of classes forgotten earlier are already unlearned, so the mask
    # leaves them alone, unless this update would bring one back within the margin.
    candidate, result = unlearn(parent, features, forgotten, params.unlearn, blocked_classes=forgotten)
    return Unlearned(candidate, result, forget_classes, forgotten)


def evaluate_candidate(parent: SplitModel, candidate: SplitModel, features: FeatureSet,
                       forgotten: tuple[int, ...]) -> dict:
    """Every CONTRACT metric of the candidate, with the parent scored on the same retain set.

    Returns {"metrics", "before", "after", "evaluate_s"}: before/after hold per-class accuracies and
    test confusion matrices for the plots.
    """
    start = time.perf_counter()
    k = parent.spec.num_classes
    before = evaluate(outputs_from_features(parent, features), forgotten, k, with_probe=False)
    after = evaluate(outputs_from_features(candidate, features), forgotten, k,
                     original_test_retain_acc=before["metrics"]["test_retain_acc"])
    return {"metrics": after["metrics"], "before": before, "after": after,
            "evaluate_s": round(time.perf_counter() - start, 4)}
