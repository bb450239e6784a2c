"""Metrics exactly as CONTRACT.md defines them, at bounded cost. Accuracies are percentages (0-100).

The MIA and the linear probe read seeded, class-stratified samples whose size is capped
(``evaluation.*`` in params.yaml) and reported beside the metrics; per-class counts are bincounts,
so 100 classes cost the same as 10.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lau.config import EvaluationConfig
from lau.data import Split, class_mask
from lau.features import FeatureSet, extract
from lau.models import SplitModel

CONTRACT_KEYS = ("forget_acc", "test_forget_acc", "retain_acc", "test_retain_acc",
                 "original_test_retain_acc", "retain_drop", "mia_efficacy", "probe_forget_acc")
# Metrics that read the model's outputs: NaN when some of those outputs are NaN or infinite.
OUTPUT_METRICS = ("forget_acc", "test_forget_acc", "retain_acc", "test_retain_acc", "retain_drop",
                  "mia_efficacy")


@dataclass(frozen=True)
class Outputs:
    """A model's logits and penultimate features on (a selection of) the train and test images."""

    train_logits: torch.Tensor  # (N_train, K)
    train_labels: torch.Tensor
    test_logits: torch.Tensor  # (N_test, K)
    test_labels: torch.Tensor
    train_penultimate: torch.Tensor  # (N_train, D)
    test_penultimate: torch.Tensor  # (N_test, D)


@dataclass(frozen=True)
class MiaResult:
    """The SVC MIA's efficacy and how many images each of its three sets held."""

    efficacy: float
    members: int
    non_members: int
    targets: int


@dataclass(frozen=True)
class ProbeResult:
    """The linear probe's accuracy on the forgotten classes' test images, and its sample sizes."""

    forget_acc: float
    train_images: int
    test_images: int


def head_outputs(model: SplitModel, depth: int, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, penultimate) of a candidate whose F_f is the cached one: only F_c runs."""
    with torch.inference_mode():
        pre = model.eval().forward_head(feats, depth, pre_logits=True) if depth > 1 else feats
        return model.blocks[-1](pre), pre.flatten(1)


def outputs_from_features(model: SplitModel, features: FeatureSet, train_rows: torch.Tensor | None = None,
                          test_rows: torch.Tensor | None = None) -> Outputs:
    """Exact outputs on the cached features; ``*_rows`` select the images (default: all)."""
    train_feats, train_labels = features.train_features, features.train_labels
    test_feats, test_labels = features.test_features, features.test_labels
    if train_rows is not None:
        train_feats, train_labels = train_feats[train_rows], train_labels[train_rows]
    if test_rows is not None:
        test_feats, test_labels = test_feats[test_rows], test_labels[test_rows]
    train_logits, train_pre = head_outputs(model, features.depth, train_feats)
    test_logits, test_pre = head_outputs(model, features.depth, test_feats)
    return Outputs(train_logits, train_labels, test_logits, test_labels, train_pre, test_pre)


@torch.inference_mode()
def outputs_from_images(model: SplitModel, split: Split, batch_size: int = 512) -> Outputs:
    """Outputs of a model whose features changed (baselines): one full pass over the images."""
    def run(images: torch.Tensor, label: str) -> tuple[torch.Tensor, torch.Tensor]:
        pre = extract(model, images, 1, batch_size, label)
        return model.blocks[-1](pre), pre.flatten(1)

    train_logits, train_pre = run(split.train_images, "eval train")
    test_logits, test_pre = run(split.test_images, "eval test")
    return Outputs(train_logits, split.train_labels, test_logits, split.test_labels, train_pre, test_pre)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of rows whose argmax is the label (NaN for no rows)."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


def class_counts(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(right, total) per class, two bincounts."""
    return (torch.bincount(labels[predicted == labels], minlength=num_classes),
            torch.bincount(labels, minlength=num_classes))


def per_class_from_counts(correct: torch.Tensor, total: torch.Tensor) -> list[float | None]:
    percent = (100.0 * correct.double() / total.clamp_min(1).double()).tolist()
    return [round(p, 4) if n > 0 else None for p, n in zip(percent, total.tolist())]


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Accuracy of every class (None for a class without images), from two bincounts."""
    return per_class_from_counts(*class_counts(logits.argmax(1), labels, num_classes))


def confusion_from_predictions(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[list[int]]:
    cells = torch.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return cells.view(num_classes, num_classes).tolist()


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts (true class rows, predicted class columns), one bincount."""
    return confusion_from_predictions(logits.argmax(1), labels, num_classes)


def non_finite_rows(*tensors: torch.Tensor) -> int:
    """How many rows, over all the tensors, hold a NaN or an infinity."""
    return sum(int((~torch.isfinite(t.reshape(len(t), -1))).any(1).sum()) for t in tensors if len(t))


def stratified_sample(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices (ascending) of a seeded random sample of ``size`` rows, every class keeping its share
    (largest remainder; each class present keeps at least one row when ``size`` allows).
    ``size`` <= 0 or >= len(labels): every row. NumPy, one thread: fast on a busy machine too."""
    if size <= 0 or size >= len(labels):
        return torch.arange(len(labels))
    values = labels.numpy()
    counts = np.bincount(values)
    counts = counts[counts > 0]  # classes present, in class order
    quota = _allocate(counts, size)
    shuffled = np.random.default_rng(seed).permutation(len(values))
    small = values.astype(np.int16) if values.max() < 2**15 else values  # 16-bit: a linear radix sort
    grouped = shuffled[np.argsort(small[shuffled], kind="stable")]  # by class, random within
    starts = np.cumsum(counts) - counts
    picked = np.concatenate([grouped[start: start + take] for start, take in zip(starts, quota)])
    return torch.from_numpy(np.sort(picked))


def _allocate(counts: np.ndarray, size: int) -> np.ndarray:
    """Rows per class summing to ``size``: proportional, at least one per class when size allows."""
    exact = size * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    if size >= len(counts):
        quota = np.maximum(quota, 1)
    while quota.sum() > size:  # the floor of one raised a small class: take from the most over-served
        quota[np.argmax(np.where(quota > 1, quota - exact, -np.inf))] -= 1
    short = size - int(quota.sum())
    if short:
        room = np.where(quota < counts, exact - quota, -np.inf)
        quota[np.argsort(-room, kind="stable")[:short]] += 1
    return quota


def true_label_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return F.softmax(logits.double(), dim=1).gather(1, labels[:, None]).numpy()  # (N, 1)


def _sample_rows(mask: torch.Tensor, labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    rows = torch.nonzero(mask).flatten()
    return rows[stratified_sample(labels[rows], size, seed)]


def mia_sets(outputs: Outputs, forget_classes: tuple[int, ...], sample: int = 0,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The true-label confidences (N, 1) of the MIA's members, non-members and targets (see ``mia``)."""
    forget_train = class_mask(outputs.train_labels, forget_classes)
    non_members = _sample_rows(~class_mask(outputs.test_labels, forget_classes), outputs.test_labels,
                               sample, seed)
    members = _sample_rows(~forget_train, outputs.train_labels, len(non_members), seed + 1)
    targets = _sample_rows(forget_train, outputs.train_labels, sample, seed + 2)
    return (true_label_confidence(outputs.train_logits[members], outputs.train_labels[members]),
            true_label_confidence(outputs.test_logits[non_members], outputs.test_labels[non_members]),
            true_label_confidence(outputs.train_logits[targets], outputs.train_labels[targets]))


def mia(outputs: Outputs, forget_classes: tuple[int, ...], sample: int = 0, seed: int = 0) -> MiaResult:
    """SalUn's SVC MIA: non-members = test images without the forgotten classes, members = a
    stratified random sample of retain train images of the same size, targets = forget train images;
    efficacy = share of targets judged non-members, x 100. ``sample`` caps non-members and targets
    (stratified, seeded; 0 = all)."""
    member_conf, non_member_conf, target_conf = mia_sets(outputs, forget_classes, sample, seed)
    sizes = (len(member_conf), len(non_member_conf), len(target_conf))
    if 0 in sizes:
        return MiaResult(float("nan"), *sizes)
    svc = fit_mia_svc(np.concatenate([member_conf, non_member_conf])[:, 0],
                      np.concatenate([np.ones(len(member_conf)), np.zeros(len(non_member_conf))]))
    return MiaResult(100.0 * float((svc_predict(svc, target_conf) == 0).mean()), *sizes)


MIA_GRID = 1e-4  # confidences are rounded to this before the SVC's fit (see fit_mia_svc)


def mia_svc() -> Any:
    """An unfitted SVC with the MIA's settings (SalUn's: rbf, C=3, gamma="auto")."""
    from sklearn.svm import SVC

    return SVC(C=3, gamma="auto", kernel="rbf")


def fit_mia_svc(confidence: np.ndarray, member: np.ndarray, grid: float = MIA_GRID) -> Any:
    """The MIA's SVC (rbf, C=3, gamma="auto") fitted on 1-d confidences rounded to ``grid``, every
    distinct (confidence, label) pair once with its count as sample weight. For identical points
    libsvm's dual depends only on the sum of their coefficients, so a point of weight w (C scaled by
    w) is the same problem as w copies: the fit is the SVC on the rounded confidences, with a
    fraction of the points. libsvm's time grows with the square of the points; 2 x 2,000
    confidences become 400-1,600 distinct ones (0.3-0.5 s -> 0.01-0.05 s). The efficacy equals the
    unrounded fit's on 60 of 60 synthetic cases and 59 of 60 cases on four real datasets (one target
    in 128, 7e-5 from the decision boundary, flipped: docs/results-scale.md)."""
    rounded = np.asarray(confidence, dtype=np.float64)
    if grid > 0:  # 0: exact duplicates merged, nothing rounded
        rounded = np.round(rounded / grid) * grid
    points, counts = np.unique(np.stack([rounded, np.asarray(member, dtype=np.float64)], 1), axis=0,
                               return_counts=True)
    return mia_svc().fit(points[:, :1], points[:, 1], sample_weight=counts.astype(np.float64))


def svc_predict(svc: Any, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """``svc.predict(x)`` for a fitted binary rbf SVC with gamma="auto" on one feature (the MIA's
    confidence), as a NumPy kernel product per chunk of rows instead of libsvm's row-by-row loop
    (2-3x faster on 2000 targets x 3000 support vectors):
    decision = sum_i dual_coef_i exp(-gamma (x - sv_i)^2) + intercept_, positive -> classes_[1]."""
    if x.shape[1] != 1 or svc.support_vectors_.shape[1] != 1:
        raise ValueError("svc_predict is for one-feature inputs")
    gamma, support, coef = 1.0, svc.support_vectors_[:, 0], svc.dual_coef_[0]  # gamma="auto": 1 / 1 feature
    decisions = [np.exp(-gamma * np.subtract.outer(x[start: start + chunk, 0], support) ** 2) @ coef
                 for start in range(0, len(x), chunk)]
    decision = (np.concatenate(decisions) if decisions else np.zeros(0)) + svc.intercept_[0]
    return svc.classes_[(decision > 0).astype(np.int64)]


def mia_efficacy(outputs: Outputs, forget_classes: tuple[int, ...], sample: int = 0, seed: int = 0) -> float:
    """The MIA's efficacy alone (see ``mia``)."""
    return mia(outputs, forget_classes, sample, seed).efficacy


def fit_probe(train_penultimate: torch.Tensor, train_labels: torch.Tensor
              ) -> Callable[[torch.Tensor], np.ndarray] | None:
    """A linear probe (standardised logistic regression) fitted on these penultimate features, as a
    function from features to predicted classes; None when there is nothing finite to fit on."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if len(train_labels) == 0 or non_finite_rows(train_penultimate):
        return None
    train_x = train_penultimate.double().numpy()
    scaler = StandardScaler().fit(train_x)
    # One BLAS thread: on a shared 2-core machine, small matrix products are 3-5x faster that way.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; the score is still the probe's
        fitted = LogisticRegression(max_iter=300).fit(scaler.transform(train_x), train_labels.numpy())
    del train_x

    def predict(penultimate: torch.Tensor) -> np.ndarray:
        with threadpool_limits(1):
            return fitted.predict(scaler.transform(penultimate.double().numpy()))

    return predict


def probe(train_penultimate: torch.Tensor, train_labels: torch.Tensor, forget_penultimate: torch.Tensor,
          forget_labels: torch.Tensor) -> ProbeResult:
    """The probe fitted on the given training features, scored on the forgotten classes' test
    features: how decodable those classes still are."""
    sizes = (len(train_labels), len(forget_labels))
    predict = fit_probe(train_penultimate, train_labels)
    if predict is None or not len(forget_labels) or non_finite_rows(forget_penultimate):
        return ProbeResult(float("nan"), *sizes)
    return ProbeResult(100.0 * float((predict(forget_penultimate) == forget_labels.numpy()).mean()), *sizes)


def probe_forget_accuracy(outputs: Outputs, forget_classes: tuple[int, ...], sample: int = 0,
                          seed: int = 0) -> float:
    """The probe on ``outputs``: fitted on a stratified sample of ``sample`` train rows (0 = all)."""
    rows = stratified_sample(outputs.train_labels, sample, seed)
    forget_test = class_mask(outputs.test_labels, forget_classes)
    return probe(outputs.train_penultimate[rows], outputs.train_labels[rows],
                 outputs.test_penultimate[forget_test], outputs.test_labels[forget_test]).forget_acc


def evaluate(outputs: Outputs, forget_classes: tuple[int, ...], num_classes: int, *,
             original_test_retain_acc: float | None = None, with_probe: bool = True,
             cfg: EvaluationConfig = EvaluationConfig(), probe_result: ProbeResult | None = None) -> dict:
    """Every CONTRACT metric plus per-class accuracies, the test confusion matrix and sample sizes.

    ``forget_classes`` is cumulative over the lineage; forget accuracies are maxima over them, and
    NaN when one of them has no image in that part of the data (nothing shows it was forgotten).
    Outputs with a NaN or an infinity make every output metric NaN and say how many rows they are
    in ``non_finite_outputs`` (the gate rejects them). ``probe_result``: a probe already computed on
    the same penultimate features (the parent's, at depth 1); else it is fitted here if ``with_probe``.
    """
    train_predicted, test_predicted = outputs.train_logits.argmax(1), outputs.test_logits.argmax(1)
    train_counts = class_counts(train_predicted, outputs.train_labels, num_classes)
    test_counts = class_counts(test_predicted, outputs.test_labels, num_classes)
    metrics = _accuracies(train_counts, test_counts, forget_classes, original_test_retain_acc)
    metrics["test_predicted_as_forgotten"] = int(class_mask(test_predicted, forget_classes).sum())
    non_finite = non_finite_rows(outputs.train_logits, outputs.test_logits)
    evidence = mia(outputs, forget_classes, cfg.mia_sample, cfg.seed) if not non_finite else \
        MiaResult(float("nan"), 0, 0, 0)
    if probe_result is None and with_probe:
        rows = stratified_sample(outputs.train_labels, cfg.probe_sample, cfg.seed)
        forget_test = class_mask(outputs.test_labels, forget_classes)
        probe_result = probe(outputs.train_penultimate[rows], outputs.train_labels[rows],
                             outputs.test_penultimate[forget_test], outputs.test_labels[forget_test])
    probe_result = probe_result or ProbeResult(float("nan"), 0, 0)
    metrics.update({"mia_efficacy": evidence.efficacy, "probe_forget_acc": probe_result.forget_acc})
    if non_finite:
        metrics.update({key: float("nan") for key in OUTPUT_METRICS})
    metrics.update({"non_finite_outputs": non_finite, "mia_members": evidence.members,
                    "mia_non_members": evidence.non_members, "mia_targets": evidence.targets,
                    "probe_train_images": probe_result.train_images, "probe_test_images": probe_result.test_images})
    metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
    return {"metrics": metrics, "per_class_train_acc": per_class_from_counts(*train_counts),
            "per_class_test_acc": per_class_from_counts(*test_counts),
            "confusion_test": confusion_from_predictions(test_predicted, outputs.test_labels, num_classes)}


def _accuracies(train_counts: tuple[torch.Tensor, torch.Tensor], test_counts: tuple[torch.Tensor, torch.Tensor],
                forget_classes: tuple[int, ...], original_test_retain_acc: float | None) -> dict:
    """The accuracy metrics of CONTRACT.md from per-class (right, total) counts, and how many retain
    images each retain accuracy read."""
    (train_correct, train_total), (test_correct, test_total) = train_counts, test_counts
    forgotten = list(forget_classes)
    retained = torch.ones(len(train_total), dtype=torch.bool)
    retained[forgotten] = False
    test_retain = _percent(test_correct[retained].sum(), test_total[retained].sum())
    original = test_retain if original_test_retain_acc is None else original_test_retain_acc
    return {
        "forget_acc": _worst(train_correct[forgotten], train_total[forgotten]),
        "test_forget_acc": _worst(test_correct[forgotten], test_total[forgotten]),
        "retain_acc": _percent(train_correct[retained].sum(), train_total[retained].sum()),
        "test_retain_acc": test_retain,
        "original_test_retain_acc": original,
        "retain_drop": original - test_retain,
        "retain_acc_images": int(train_total[retained].sum()),
        "test_retain_acc_images": int(test_total[retained].sum()),
    }


def _percent(correct: torch.Tensor, total: torch.Tensor) -> float:
    return 100.0 * float(correct) / float(total) if int(total) > 0 else float("nan")


def _worst(correct: torch.Tensor, total: torch.Tensor) -> float:
    """Largest per-class accuracy; NaN when a class has no image (it cannot be shown forgotten)."""
    if len(total) == 0 or bool((total == 0).any()):
        return float("nan")
    return max(_percent(c, n) for c, n in zip(correct, total))
