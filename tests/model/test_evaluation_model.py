"""evaluate_candidate on the shared trained CNN: below the caps it is the full evaluation, at depth 1
and 2, and a deeper candidate's probe is its own, not the parent's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lau.config import Params
from lau.evaluation import evaluate_candidate
from lau.features import FeatureSet
from lau.metrics import evaluate, outputs_from_features
from lau.models import SplitModel
from lau.unlearn import unlearn

Features = Callable[[int], FeatureSet]
ACCURACIES = ("forget_acc", "test_forget_acc", "retain_acc", "test_retain_acc", "retain_drop")


@pytest.mark.parametrize("depth", [1, 2])
def test_under_the_caps_the_evaluation_reads_every_image(trained_model: SplitModel, feature_sets: Features,
                                                         depth: int) -> None:
    features = feature_sets(depth)
    candidate, _ = unlearn(trained_model, features, (3,), Params().unlearn)
    evaluation = evaluate_candidate(trained_model, candidate, features, (3,))
    parent_full = evaluate(outputs_from_features(trained_model, features), (3,), 10, with_probe=False)
    full = evaluate(outputs_from_features(candidate, features), (3,), 10, with_probe=False,
                    original_test_retain_acc=parent_full["metrics"]["test_retain_acc"])
    metrics = evaluation.metrics
    assert {k: metrics[k] for k in ACCURACIES} == {k: full["metrics"][k] for k in ACCURACIES}
    assert metrics["forget_acc"] == 0.0 and metrics["mia_efficacy"] >= 50.0
    assert list(evaluation.after.per_class_test_acc) == full["per_class_test_acc"]
    assert [list(row) for row in evaluation.before.confusion_test] == parent_full["confusion_test"]
    assert metrics["retain_acc_images"] == int((features.train_labels != 3).sum())
    parent_probe = evaluation.before.metrics["probe_forget_acc"]
    if depth == 1:  # same penultimate features: the parent's probe, reused
        assert metrics["probe_forget_acc"] == parent_probe
    else:  # the candidate's hidden layer moved: its own probe, and less decodable
        assert metrics["probe_forget_acc"] < parent_probe
