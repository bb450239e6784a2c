"""Metrics exactly as CONTRACT.md defines them. Accuracies are percentages (0-100)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lau.data import Split, class_mask
from lau.features import FeatureSet, extract
from lau.models import SplitModel

CONTRACT_KEYS = ("forget_acc", "test_forget_acc", "retain_acc", "test_retain_acc",
                 "original_test_retain_acc", "retain_drop", "mia_efficacy", "probe_forget_acc")


@dataclass(frozen=True)
class Outputs:
    """A model's logits and penultimate features on the train and test images."""

    train_logits: torch.Tensor  # (N_train, K)
    train_labels: torch.Tensor
    test_logits: torch.Tensor  # (N_test, K)
    test_labels: torch.Tensor
    train_penultimate: torch.Tensor  # (N_train, D)
    test_penultimate: torch.Tensor  # (N_test, D)


@torch.inference_mode()
def outputs_from_features(model: SplitModel, features: FeatureSet) -> Outputs:
    """Exact outputs of a candidate whose F_f is the cached one: only F_c runs."""
    head, depth = model.eval(), features.depth

    def run(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = head.forward_head(feats, depth, pre_logits=True) if depth > 1 else feats
        return head.blocks[-1](pre), pre.flatten(1)

    train_logits, train_pre = run(features.train_features)
    test_logits, test_pre = run(features.test_features)
    return Outputs(train_logits, features.train_labels, test_logits, features.test_labels,
                   train_pre, test_pre)


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


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Accuracy of every class (None for a class without images)."""
    result: list[float | None] = []
    for cls in range(num_classes):
        rows = labels == cls
        result.append(round(accuracy(logits[rows], labels[rows]), 4) if rows.any() else None)
    return result


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts (true class rows, predicted class columns)."""
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    matrix.index_put_((labels, logits.argmax(1)), torch.ones_like(labels), accumulate=True)
    return matrix.tolist()


def true_label_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return F.softmax(logits.double(), dim=1).gather(1, labels[:, None]).numpy()  # (N, 1)


def mia_efficacy(outputs: Outputs, forget_classes: tuple[int, ...]) -> float:
    """SalUn's SVC MIA: members = retain train images, non-members = test images without the
    forgotten classes; efficacy = share of forget images judged non-members, x 100."""
    from sklearn.svm import SVC

    forget_train = class_mask(outputs.train_labels, forget_classes)
    forget_test = class_mask(outputs.test_labels, forget_classes)
    non_members = true_label_confidence(outputs.test_logits[~forget_test], outputs.test_labels[~forget_test])
    retain_rows = torch.nonzero(~forget_train).flatten()[: len(non_members)]
    members = true_label_confidence(outputs.train_logits[retain_rows], outputs.train_labels[retain_rows])
    targets = true_label_confidence(outputs.train_logits[forget_train], outputs.train_labels[forget_train])
    if len(targets) == 0 or len(members) == 0 or len(non_members) == 0:
        return float("nan")
    svc = SVC(C=3, gamma="auto", kernel="rbf")
    svc.fit(np.concatenate([members, non_members]),
            np.concatenate([np.ones(len(members)), np.zeros(len(non_members))]))
    return 100.0 * float((svc.predict(targets) == 0).mean())


def probe_forget_accuracy(outputs: Outputs, forget_classes: tuple[int, ...]) -> float:
    """Linear probe (logistic regression) on the penultimate features of every training image,
    scored on the test images of the forgotten classes: how decodable they still are."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    forget_test = class_mask(outputs.test_labels, forget_classes)
    if not forget_test.any():
        return float("nan")
    scaler = StandardScaler().fit(outputs.train_penultimate.double().numpy())
    probe = LogisticRegression(max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; the score is still the probe's
        probe.fit(scaler.transform(outputs.train_penultimate.double().numpy()), outputs.train_labels.numpy())
    predicted = probe.predict(scaler.transform(outputs.test_penultimate[forget_test].double().numpy()))
    return 100.0 * float((predicted == outputs.test_labels[forget_test].numpy()).mean())


def evaluate(outputs: Outputs, forget_classes: tuple[int, ...], num_classes: int, *,
             original_test_retain_acc: float | None = None, with_probe: bool = True) -> dict:
    """Every CONTRACT metric plus per-class accuracies and the test confusion matrix.

    ``forget_classes`` is cumulative over the lineage; forget accuracies are maxima over them, and
    NaN when one of them has no image in that part of the data (nothing shows it was forgotten).
    """
    forget_train = class_mask(outputs.train_labels, forget_classes)
    forget_test = class_mask(outputs.test_labels, forget_classes)
    per_class_train = per_class_accuracy(outputs.train_logits, outputs.train_labels, num_classes)
    per_class_test = per_class_accuracy(outputs.test_logits, outputs.test_labels, num_classes)
    present_train = [per_class_train[c] for c in forget_classes if per_class_train[c] is not None]
    present_test = [per_class_test[c] for c in forget_classes if per_class_test[c] is not None]
    test_retain = accuracy(outputs.test_logits[~forget_test], outputs.test_labels[~forget_test])
    original = test_retain if original_test_retain_acc is None else original_test_retain_acc
    forgotten_predicted = class_mask(outputs.test_logits.argmax(1), forget_classes)
    # A forgotten class without images cannot be shown forgotten: NaN, which the gate rejects.
    complete_train, complete_test = len(present_train) == len(forget_classes), len(present_test) == len(forget_classes)
    metrics = {
        "forget_acc": max(present_train) if present_train and complete_train else float("nan"),
        "test_forget_acc": max(present_test) if present_test and complete_test else float("nan"),
        "retain_acc": accuracy(outputs.train_logits[~forget_train], outputs.train_labels[~forget_train]),
        "test_retain_acc": test_retain,
        "original_test_retain_acc": original,
        "retain_drop": original - test_retain,
        "mia_efficacy": mia_efficacy(outputs, forget_classes),
        "probe_forget_acc": probe_forget_accuracy(outputs, forget_classes) if with_probe else float("nan"),
        "test_predicted_as_forgotten": int(forgotten_predicted.sum().item()),
    }
    metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
    return {"metrics": metrics, "per_class_train_acc": per_class_train,
            "per_class_test_acc": per_class_test,
            "confusion_test": confusion_matrix(outputs.test_logits, outputs.test_labels, num_classes)}
