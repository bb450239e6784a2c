"""Metrics (CONTRACT.md definitions) and the gate, on hand-made logits and features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lau.config import GateConfig
from lau.gate import verify
from lau.metrics import (
    Outputs,
    accuracy,
    confusion_matrix,
    evaluate,
    mia_efficacy,
    per_class_accuracy,
    probe_forget_accuracy,
)


def one_hot_logits(predicted: list[int], num_classes: int) -> torch.Tensor:
    logits = torch.zeros(len(predicted), num_classes)
    logits[torch.arange(len(predicted)), torch.tensor(predicted)] = 5.0
    return logits


def test_accuracy_per_class_and_confusion() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    logits = one_hot_logits([0, 1, 1, 1, 0, 0], 4)
    assert accuracy(logits, labels) == pytest.approx(100 * 3 / 6)
    assert per_class_accuracy(logits, labels, 4) == [50.0, pytest.approx(66.6667, abs=1e-3), 0.0, None]
    assert confusion_matrix(logits, labels, 4) == [[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert math.isnan(accuracy(logits[:0], labels[:0]))


def logits_with_confidence(confidence: np.ndarray, labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Logits whose softmax gives the true label exactly ``confidence``, the rest spread evenly."""
    probs = np.repeat(((1 - confidence) / (num_classes - 1))[:, None], num_classes, axis=1)
    probs[np.arange(len(labels)), labels] = confidence
    return torch.from_numpy(np.log(probs)).float()


def mia_outputs(forget_confidence: tuple[float, float], seed: int = 0) -> Outputs:
    """Members (retain train) are confident, non-members (test) are not; class 0 is forgotten."""
    rng = np.random.default_rng(seed)
    k, n = 4, 120
    retain_labels = rng.integers(1, k, n)
    test_labels = rng.integers(1, k, n)
    forget_labels = np.zeros(n, dtype=np.int64)
    train_labels = np.concatenate([retain_labels, forget_labels])
    train_conf = np.concatenate([rng.uniform(0.95, 0.999, n), rng.uniform(*forget_confidence, n)])
    test_conf = rng.uniform(0.2, 0.6, n)
    train_logits = logits_with_confidence(train_conf, train_labels, k)
    test_logits = logits_with_confidence(test_conf, test_labels, k)
    return Outputs(train_logits, torch.from_numpy(train_labels), test_logits, torch.from_numpy(test_labels),
                   torch.zeros(2 * n, 1), torch.zeros(n, 1))


def test_mia_efficacy_high_when_forget_data_looks_unseen() -> None:
    assert mia_efficacy(mia_outputs((0.2, 0.6)), (0,)) >= 90.0


def test_mia_efficacy_low_when_forget_data_looks_like_members() -> None:
    assert mia_efficacy(mia_outputs((0.95, 0.999)), (0,)) <= 10.0


def probe_outputs(separable: bool, seed: int = 0) -> Outputs:
    rng = np.random.default_rng(seed)
    k, dim, n_train, n_test = 4, 16, 400, 200
    centers = rng.normal(0, 4, (k, dim))
    train_labels, test_labels = rng.integers(0, k, n_train), rng.integers(0, k, n_test)

    def feats(labels: np.ndarray) -> torch.Tensor:
        noise = rng.normal(0, 1, (len(labels), dim))
        return torch.from_numpy(noise + (centers[labels] if separable else 0)).float()

    logits_train, logits_test = torch.zeros(n_train, k), torch.zeros(n_test, k)
    return Outputs(logits_train, torch.from_numpy(train_labels), logits_test, torch.from_numpy(test_labels),
                   feats(train_labels), feats(test_labels))


def test_probe_decodes_a_separable_forget_class() -> None:
    assert probe_forget_accuracy(probe_outputs(separable=True), (2,)) >= 95.0


def test_probe_is_near_chance_on_noise_features() -> None:
    assert probe_forget_accuracy(probe_outputs(separable=False), (2,)) <= 50.0


def test_evaluate_takes_the_worst_forgotten_class_and_the_retain_drop() -> None:
    train_labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    train_logits = one_hot_logits([1, 1, 1, 0, 2, 2, 3, 3], 4)  # class 0: 0 %, class 1: 50 %
    test_labels = torch.tensor([0, 1, 2, 3, 2, 3])
    test_logits = one_hot_logits([3, 0, 2, 3, 2, 1], 4)  # retain (2, 3): 3 of 4 right
    outputs = Outputs(train_logits, train_labels, test_logits, test_labels,
                      torch.randn(8, 3, generator=torch.Generator().manual_seed(0)),
                      torch.randn(6, 3, generator=torch.Generator().manual_seed(1)))
    result = evaluate(outputs, (0, 1), 4, original_test_retain_acc=80.0)
    metrics = result["metrics"]
    assert metrics["forget_acc"] == 50.0
    assert metrics["test_forget_acc"] == 0.0
    assert metrics["retain_acc"] == 100.0
    assert metrics["test_retain_acc"] == 75.0
    assert metrics["retain_drop"] == pytest.approx(5.0)
    assert metrics["test_predicted_as_forgotten"] == 2  # one test image predicted 0, one predicted 1
    assert result["confusion_test"][0][3] == 1


def test_a_forgotten_class_without_images_is_not_shown_forgotten() -> None:
    """Class 1 has no train image (e.g. features whose labels were tampered with): forget_acc is NaN,
    not the 0 % of class 0 alone, and the gate rejects it."""
    train_labels = torch.tensor([0, 0, 2, 2, 3, 3])
    train_logits = one_hot_logits([2, 2, 2, 2, 3, 3], 4)  # class 0: 0 %
    test_labels = torch.tensor([0, 1, 2, 3])
    test_logits = one_hot_logits([2, 2, 2, 3], 4)
    outputs = Outputs(train_logits, train_labels, test_logits, test_labels, torch.randn(6, 3), torch.randn(4, 3))
    metrics = evaluate(outputs, (0, 1), 4, with_probe=False)["metrics"]
    assert math.isnan(metrics["forget_acc"]) and metrics["test_forget_acc"] == 0.0
    verdict = verify(metrics, GateConfig())
    assert not verdict.passed and [c.name for c in verdict.failed()] == ["forget_acc"]


# ------------------------------------------------------------------ the gate


def good_metrics(**changes: float) -> dict:
    metrics = {"forget_acc": 0.0, "test_forget_acc": 0.0, "retain_drop": 0.4, "mia_efficacy": 100.0}
    metrics.update(changes)
    return metrics


def test_gate_passes_a_clean_candidate() -> None:
    verdict = verify(good_metrics(), GateConfig(max_retain_drop=1.0))
    assert verdict.passed and not verdict.failed() and verdict.reason() == ""
    assert [c.name for c in verdict.checks] == ["forget_acc", "test_forget_acc", "retain_drop"]


def test_gate_fails_on_remaining_forget_accuracy() -> None:
    verdict = verify(good_metrics(forget_acc=2.5), GateConfig(max_retain_drop=1.0))
    assert not verdict.passed
    (failed,) = verdict.failed()
    assert (failed.name, failed.value, failed.threshold) == ("forget_acc", 2.5, 0.0)
    assert "forget_acc" in verdict.reason() and "2.5" in verdict.reason()
    assert "test_forget_acc" not in verdict.reason()


def test_gate_fails_on_retain_drop_over_threshold() -> None:
    verdict = verify(good_metrics(retain_drop=1.75), GateConfig(max_retain_drop=1.5))
    assert not verdict.passed
    (failed,) = verdict.failed()
    assert (failed.name, failed.value, failed.threshold) == ("retain_drop", 1.75, 1.5)
    assert verdict.reason() == "retain_drop = 1.75 (must be <= 1.5)"
    assert verify(good_metrics(retain_drop=1.5), GateConfig(max_retain_drop=1.5)).passed  # boundary


def test_gate_mia_floor_and_missing_values() -> None:
    verdict = verify(good_metrics(mia_efficacy=40.0), GateConfig(min_mia_efficacy=50.0))
    assert not verdict.passed and [c.name for c in verdict.failed()] == ["mia_efficacy"]
    assert "40" in verdict.reason() and "50" in verdict.reason()
    nan_verdict = verify(good_metrics(test_forget_acc=float("nan")), GateConfig())
    assert not nan_verdict.passed and [c.name for c in nan_verdict.failed()] == ["test_forget_acc"]
    json_checks = verdict.to_json()["checks"]
    assert {"name", "value", "threshold", "passed"} <= set(json_checks[0])
