"""Evidence about classes a model was trained without: does it recognise them, can a probe find them?

A model trained (or retrained, or adopted) without the erased classes has no cached features of
them: its lineage's data excludes them. Its gate reads their images from the dataset itself, split
the same stratified, seeded way, and checks the model predicts none of them as their class.
"""

from __future__ import annotations

import dataclasses

import torch

from lau.config import DataConfig
from lau.data import Split, class_mask, load_dataset, prepare, to_float
from lau.features import FeatureSet
from lau.metrics import Outputs, probe_forget_accuracy


def erased_split(cfg: DataConfig, erased: tuple[int, ...]) -> Split | None:
    """The train and test images of the erased classes only (None when nothing is erased)."""
    if not erased:
        return None
    num_classes = len(load_dataset(cfg.dataset, cfg.root, cfg.image_size).class_names)
    others = tuple(c for c in range(num_classes) if c not in erased)
    return prepare(dataclasses.replace(cfg, excluded_classes=others))


@torch.inference_mode()
def _penultimate_and_logits(model, images: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    pre, logits = [], []
    for i in range(0, len(images), batch):
        features = model.forward_features(to_float(images[i: i + batch]), 1)
        pre.append(features.flatten(1))
        logits.append(model.forward_head(features, 1))
    return torch.cat(pre), torch.cat(logits)


def _max_accuracy(logits: torch.Tensor, labels: torch.Tensor, classes: tuple[int, ...]) -> float:
    """The highest accuracy over ``classes`` (NaN if one of them has no image)."""
    accuracies = []
    for cls in classes:
        rows = labels == cls
        if not rows.any():
            return float("nan")
        accuracies.append(100.0 * float((logits[rows].argmax(1) == cls).float().mean()))
    return max(accuracies)


def erased_evidence(model, features: FeatureSet, erased_images: Split,
                    erased: tuple[int, ...], *, with_probe: bool = True) -> dict[str, float]:
    """forget_acc / test_forget_acc: the maxima over erased classes of the model's accuracy on their
    train / test images; probe_forget_acc: a linear probe on the model's penultimate features of the
    served training images plus the erased classes' training images, scored on their test images
    (read against the parent's probe: a model that never saw the class scores about as high)."""
    train_pre, train_logits = _penultimate_and_logits(model, erased_images.train_images)
    test_pre, test_logits = _penultimate_and_logits(model, erased_images.test_images)
    result = {"forget_acc": _max_accuracy(train_logits, erased_images.train_labels, erased),
              "test_forget_acc": _max_accuracy(test_logits, erased_images.test_labels, erased)}
    if with_probe and features.depth == 1:
        served = ~class_mask(features.train_labels, erased)
        outputs = Outputs(train_logits=torch.empty(0), train_labels=torch.cat(
            [features.train_labels[served], erased_images.train_labels]), test_logits=test_logits,
            test_labels=erased_images.test_labels,
            train_penultimate=torch.cat([features.train_features[served].flatten(1), train_pre]),
            test_penultimate=test_pre)
        result["probe_forget_acc"] = probe_forget_accuracy(outputs, erased)
    return {k: round(v, 4) for k, v in result.items()}
