"""The evaluation at bounded cost: stratified, capped, seeded samples; typed records that survive JSON;
a candidate with NaN outputs evaluated (not crashed) and rejected by the gate."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import sklearn.svm
import torch
from torch import nn

from lau.config import EvaluationConfig, GateConfig
from lau.evaluation import (
    Evaluation,
    ModelEvaluation,
    evaluate_candidate,
    evaluate_parent,
    parent_side_key,
    train_metrics,
)
from lau.features import FeatureSet
from lau.gate import verify
from lau.metrics import (
    Outputs,
    confusion_matrix,
    fit_mia_svc,
    mia,
    per_class_accuracy,
    probe,
    stratified_sample,
    svc_predict,
)
from lau.models import ModelSpec, SplitModel, clone
from lau.probe import ProbeRecord, probe_record, probe_record_key
from lau.scale import synthetic_features


def tiny_model(features: FeatureSet, num_classes: int) -> SplitModel:
    """Identity features, then a linear head set to the class means (a nearest-mean classifier)."""
    dim = features.train_features.shape[1]
    head = nn.Linear(dim, num_classes)
    means = torch.stack([features.train_features[features.train_labels == c].mean(0) for c in range(num_classes)])
    with torch.no_grad():
        head.weight.copy_(means)
        head.bias.copy_(-0.5 * (means ** 2).sum(1))
    return SplitModel(ModelSpec("tiny", num_classes, 1, 4), [nn.Identity(), head]).eval()


@pytest.fixture(scope="module")
def case() -> tuple[FeatureSet, SplitModel]:
    features = synthetic_features(2000, 16, 5, seed=1, separation=0.6)
    return features, tiny_model(features, 5)


class RecordingSVC:
    """Stands in for sklearn's SVC: records what the MIA fits on; judges every target a non-member."""

    calls: list[dict] = []

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> RecordingSVC:
        """Records every point as often as its weight says (the MIA merges repeated points)."""
        repeats = np.ones(len(y), dtype=np.int64) if sample_weight is None else sample_weight.astype(np.int64)
        RecordingSVC.calls.append({"x": np.repeat(x, repeats, axis=0), "y": np.repeat(y, repeats)})
        self.classes_ = np.array([0.0, 1.0])
        self.support_vectors_, self.dual_coef_, self.intercept_ = np.zeros((1, 1)), np.zeros((1, 1)), np.array([-1.0])
        return self


def label_sorted_outputs(num_classes: int = 6, per_class: int = 200) -> Outputs:
    """Label-sorted rows (as an image folder loads); the true-label confidence of class c is
    0.3 + 0.1 c on every row, so a member's confidence says which class it came from."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    confidence = 0.3 + 0.1 * labels.double()
    probs = ((1 - confidence) / (num_classes - 1))[:, None].repeat(1, num_classes)
    probs[torch.arange(len(labels)), labels] = confidence
    logits = probs.log().float()
    test = torch.arange(0, len(labels), 4)
    return Outputs(logits, labels, logits[test], labels[test], torch.zeros(len(labels), 1), torch.zeros(len(test), 1))


def test_stratified_sample_keeps_every_class_its_share_and_is_seeded() -> None:
    labels = torch.tensor([0] * 700 + [1] * 200 + [2] * 95 + [3] * 5)  # label-sorted, imbalanced
    rows = stratified_sample(labels, 100, seed=3)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100
    assert torch.bincount(labels[rows], minlength=4).tolist() == [70, 20, 9, 1]  # tiny class kept
    assert torch.equal(rows, stratified_sample(labels, 100, seed=3))
    assert not torch.equal(rows, stratified_sample(labels, 100, seed=4))
    assert torch.equal(stratified_sample(labels, 0, seed=3), torch.arange(1000))  # 0 = every row


def test_mia_members_come_from_every_retain_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """On label-sorted data, the first N retain rows are one or two classes; members must be a
    stratified sample of every retain class, as many as the non-members."""
    monkeypatch.setattr(sklearn.svm, "SVC", RecordingSVC)
    RecordingSVC.calls.clear()
    outputs = label_sorted_outputs()
    mia(outputs, (0,), sample=0, seed=0)
    (call,) = RecordingSVC.calls
    members = call["x"][call["y"] == 1].ravel()
    non_members = call["x"][call["y"] == 0].ravel()
    assert len(members) == len(non_members) == 250  # test rows of classes 1-5
    member_classes = np.unique(np.round((members - 0.3) / 0.1)).astype(int).tolist()
    assert member_classes == [1, 2, 3, 4, 5]


def test_the_cap_bounds_what_the_svc_fits_and_judges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sklearn.svm, "SVC", RecordingSVC)
    RecordingSVC.calls.clear()
    result = mia(label_sorted_outputs(per_class=400), (0,), sample=60, seed=0)
    (call,) = RecordingSVC.calls
    assert len(call["x"]) == 120  # 60 members + 60 non-members
    assert (result.members, result.non_members, result.targets) == (60, 60, 60)
    assert result.efficacy == 100.0  # every one of the 60 targets judged


def mia_case(seed: int = 0) -> Outputs:
    """Members confident, non-members less so, forget images in between (efficacy near 50 %)."""
    rng = np.random.default_rng(seed)
    k, n = 4, 1500
    labels = np.concatenate([rng.integers(1, k, n), np.zeros(n, dtype=np.int64)])
    confidence = np.concatenate([rng.beta(9, 1, n), rng.beta(5, 2, n)])
    test_labels = rng.integers(1, k, n)
    test_confidence = rng.beta(3, 2, n)

    def logits(conf: np.ndarray, lab: np.ndarray) -> torch.Tensor:
        probs = np.repeat(((1 - conf) / (k - 1))[:, None], k, axis=1)
        probs[np.arange(len(lab)), lab] = conf
        return torch.from_numpy(np.log(probs)).float()

    return Outputs(logits(confidence, labels), torch.from_numpy(labels), logits(test_confidence, test_labels),
                   torch.from_numpy(test_labels), torch.zeros(2 * n, 1), torch.zeros(n, 1))


def test_capped_mia_agrees_with_the_uncapped_one() -> None:
    outputs = mia_case()
    uncapped = mia(outputs, (0,), sample=0, seed=0).efficacy
    assert 15 < uncapped < 85  # a case where the efficacy is neither 0 nor 100
    capped = [mia(outputs, (0,), sample=500, seed=seed).efficacy for seed in range(3)]
    assert max(abs(value - uncapped) for value in capped) <= 6.0, (uncapped, capped)


def test_svc_predict_equals_libsvm() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.beta(8, 1, 600), rng.beta(4, 2, 600)])[:, None]
    svc = sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf").fit(x, np.r_[np.ones(600), np.zeros(600)])
    targets = rng.uniform(0, 1, (3000, 1))
    assert np.array_equal(svc_predict(svc, targets, chunk=700), svc.predict(targets))


def test_the_mia_svc_fits_each_distinct_confidence_once_and_decides_as_on_every_copy() -> None:
    """3,000 confidences with many repeats: libsvm fitted on the distinct (confidence, label) pairs,
    weighted by their counts, gives the SVC fitted on every copy (and fits far fewer points)."""
    rng = np.random.default_rng(0)
    x = np.round(np.concatenate([rng.beta(8, 1, 1500), rng.beta(4, 2, 1500)]), 3)
    member = np.r_[np.ones(1500), np.zeros(1500)]
    merged = fit_mia_svc(x, member)
    distinct = len(np.unique(np.stack([x, member], 1), axis=0))
    assert merged.shape_fit_[0] == distinct < 2000
    every_copy = sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf").fit(x[:, None], member)
    targets = rng.uniform(0, 1, (3000, 1))
    assert np.array_equal(svc_predict(merged, targets), every_copy.predict(targets))


def test_per_class_accuracy_and_confusion_by_bincount_equal_the_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    k = 100
    labels = torch.randint(0, k, (3000,), generator=generator)
    labels = labels[labels != 17]  # a class without images: None
    logits = torch.randn(len(labels), k, generator=generator)
    logits[torch.arange(len(labels)), labels] += 2.0
    expected_acc, expected_confusion = [], [[0] * k for _ in range(k)]
    for cls in range(k):
        rows = labels == cls
        expected_acc.append(100.0 * float((logits[rows].argmax(1) == cls).double().mean()) if rows.any() else None)
    for true, predicted in zip(labels.tolist(), logits.argmax(1).tolist()):
        expected_confusion[true][predicted] += 1
    actual = per_class_accuracy(logits, labels, k)
    assert actual[17] is None
    assert actual == [None if e is None else pytest.approx(e, abs=1e-4) for e in expected_acc]
    assert confusion_matrix(logits, labels, k) == expected_confusion


def test_a_nan_candidate_is_evaluated_and_rejected_by_the_gate(case: tuple[FeatureSet, SplitModel]) -> None:
    features, parent = case
    candidate = clone(parent)
    with torch.no_grad():
        candidate.blocks[-1].weight[0, 0] = float("nan")
    evaluation = evaluate_candidate(parent, candidate, features, (3,))
    metrics = evaluation.metrics
    assert metrics["non_finite_outputs"] == len(features.train_labels) + len(features.test_labels)
    assert math.isnan(metrics["mia_efficacy"]) and math.isnan(metrics["forget_acc"])
    verdict = verify(metrics, GateConfig())
    assert not verdict.passed
    assert verdict.failed()[0].name == "non_finite_outputs"
    assert verdict.reason().startswith(f"non_finite_outputs = {metrics['non_finite_outputs']} (must be == 0)")
    assert evaluation.before.metrics["non_finite_outputs"] == 0


def roundtrip(data: dict) -> dict:
    return json.loads(json.dumps(data, allow_nan=False))


def test_evaluations_round_trip_through_json(case: tuple[FeatureSet, SplitModel]) -> None:
    features, parent = case
    side = evaluate_parent(parent, features, (3,))
    side = dataclasses.replace(side, metrics={**side.metrics, "probe_forget_acc": float("nan")})
    back = ModelEvaluation.from_json(roundtrip(side.to_json()))
    assert back.to_json() == side.to_json()
    assert math.isnan(back.metrics["probe_forget_acc"])
    assert {k: v for k, v in back.metrics.items() if k != "probe_forget_acc"} == \
        {k: v for k, v in side.metrics.items() if k != "probe_forget_acc"}
    assert (back.per_class_test_acc, back.confusion_test, back.forgotten, back.settings) == \
        (side.per_class_test_acc, side.confusion_test, side.forgotten, side.settings)
    evaluation = evaluate_candidate(parent, clone(parent), features, (3,))
    again = Evaluation.from_json(roundtrip(evaluation.to_json()))
    assert again == evaluation
    trained = train_metrics(parent, features)
    assert ModelEvaluation.from_json(roundtrip(trained.to_json())) == trained


def test_a_cached_parent_side_gives_the_same_evaluation(case: tuple[FeatureSet, SplitModel]) -> None:
    features, parent = case
    candidate = clone(parent)
    with torch.no_grad():
        candidate.blocks[-1].bias[3] -= 50.0  # class 3 forgotten, nothing else moved
    cached = ModelEvaluation.from_json(roundtrip(evaluate_parent(parent, features, (3,)).to_json()))
    fresh = evaluate_candidate(parent, candidate, features, (3,))
    reused = evaluate_candidate(parent, candidate, features, (3,), parent_side=cached)
    assert reused.metrics == fresh.metrics and reused.before == fresh.before
    assert fresh.metrics["forget_acc"] == 0.0 and fresh.metrics["test_forget_acc"] == 0.0
    with pytest.raises(ValueError, match="parent_side"):
        evaluate_candidate(parent, candidate, features, (2,), parent_side=cached)
    with pytest.raises(ValueError, match="parent_side"):
        evaluate_candidate(parent, candidate, features, (3,), parent_side=cached,
                           cfg=EvaluationConfig(mia_sample=10))
    key = parent_side_key("abc", features.key, (3,), EvaluationConfig())
    assert key == parent_side_key("abc", features.key, (3,), EvaluationConfig())
    assert key != parent_side_key("abc", features.key, (2, 3), EvaluationConfig())


def test_sample_sizes_are_reported_and_forget_images_are_all_read(case: tuple[FeatureSet, SplitModel]) -> None:
    features, parent = case
    cfg = EvaluationConfig(retain_sample=300, mia_sample=50, probe_sample=200)
    metrics = evaluate_candidate(parent, clone(parent), features, (3,), cfg=cfg).metrics
    forget_train = int((features.train_labels == 3).sum())
    assert metrics["retain_acc_images"] == 300 and metrics["test_retain_acc_images"] == 300
    assert (metrics["mia_members"], metrics["mia_non_members"], metrics["mia_targets"]) == (50, 50, 50)
    assert metrics["probe_train_images"] == 200
    assert metrics["probe_test_images"] == int((features.test_labels == 3).sum())
    full = evaluate_candidate(parent, clone(parent), features, (3,), cfg=EvaluationConfig(retain_sample=0)).metrics
    assert full["retain_acc_images"] == len(features.train_labels) - forget_train
    assert metrics["forget_acc"] == full["forget_acc"]  # every forget image, whatever the cap


def test_one_probe_record_answers_every_deletion_of_a_lineage(case: tuple[FeatureSet, SplitModel]) -> None:
    """Fitted once on the cached features, the record gives the probe's accuracy on any forgotten
    set, as the probe fitted on the same sample and scored on those classes' test images does."""
    features, parent = case
    cfg = EvaluationConfig(probe_sample=600)
    record = probe_record(parent, features, cfg)
    back = ProbeRecord.from_json(roundtrip(record.to_json()))
    assert back == record and record.train_images == 600
    rows = stratified_sample(features.train_labels, 600, cfg.seed + 20)
    for forgotten in ((3,), (1, 3)):
        forget_test = torch.isin(features.test_labels, torch.tensor(forgotten))
        direct = probe(features.train_features[rows], features.train_labels[rows],
                       features.test_features[forget_test], features.test_labels[forget_test])
        assert record.result(forgotten) == direct
    cached = evaluate_parent(parent, features, (3,), cfg, probe=back)
    assert cached == evaluate_parent(parent, features, (3,), cfg)
    with pytest.raises(ValueError, match="probe record"):
        evaluate_parent(parent, features, (3,), EvaluationConfig(probe_sample=700), probe=back)
    assert probe_record_key(features.key, cfg) != probe_record_key(features.key, EvaluationConfig(probe_sample=700))


def test_a_nan_model_at_train_time_shows_nan_accuracies(case: tuple[FeatureSet, SplitModel]) -> None:
    features, parent = case
    broken = clone(parent)
    with torch.no_grad():
        broken.blocks[-1].bias[1] = float("inf")
    metrics = train_metrics(broken, features).metrics
    assert math.isnan(metrics["train_acc"]) and math.isnan(metrics["test_acc"])
    assert metrics["non_finite_outputs"] == len(features.train_labels) + len(features.test_labels)
    assert train_metrics(parent, features).metrics["non_finite_outputs"] == 0
