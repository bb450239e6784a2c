"""The feature cache: F_f(x) of every image, extracted once per (extractor, data, preprocessing).

With F_f frozen, the features are the same for a parent and all its unlearned descendants, so LAU
and the evaluation of a depth-d candidate read only this cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lau.checkpoint import canonical_safetensors, weights_hash
from lau.data import Split, to_float
from lau.errors import BadInput
from lau.models import SplitModel
from lau.utils import device, progress

FEATURES_FILE = "features.safetensors"
FORMAT = 2  # 2: validation features beside train and test (1 had none): part of the cache key


def _none() -> torch.Tensor:
    return torch.empty(0)


def _no_labels() -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64)


@dataclass(frozen=True)
class FeatureSet:
    """Cached features of the train, validation and test images, with their labels.

    Validation features are where LAU chooses among its candidates; test features only judge.
    """

    key: str
    depth: int
    train_features: torch.Tensor  # (N_train, *feature_shape) float32
    train_labels: torch.Tensor  # (N_train,) int64
    test_features: torch.Tensor  # (N_test, *feature_shape) float32
    test_labels: torch.Tensor  # (N_test,) int64
    val_features: torch.Tensor = field(default_factory=_none)  # (N_val, *feature_shape) float32
    val_labels: torch.Tensor = field(default_factory=_no_labels)  # (N_val,) int64

    @property
    def has_val(self) -> bool:
        return len(self.val_labels) > 0


def extractor_hash(model: SplitModel, depth: int) -> str:
    """sha256 of F_f's weights and buffers (BatchNorm statistics and normalization included)."""
    tensors = {}
    for i, module in enumerate(model.feature_modules(depth)):
        tensors.update({f"{i}.{k}": v for k, v in module.state_dict().items()})
    return weights_hash(tensors)


def cache_key(model: SplitModel, depth: int, data_version: str) -> str:
    """Hash of (extractor weights, data version, preprocessing, depth): the cache's address."""
    spec = model.spec
    preprocessing = {"mean": list(spec.mean), "std": list(spec.std), "image_size": spec.image_size,
                     "in_channels": spec.in_channels, "arch": spec.arch, "depth": depth}
    payload = json.dumps({"extractor": extractor_hash(model, depth), "data": data_version,
                          "preprocessing": preprocessing, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@torch.inference_mode()
def extract(model: SplitModel, images: torch.Tensor, depth: int, batch_size: int = 512,
            label: str = "features") -> torch.Tensor:
    """F_f of uint8 images, in eval mode under inference mode; progress on stderr."""
    dev = device()
    model.to(dev).eval()
    chunks, start = [], time.perf_counter()
    for i in range(0, len(images), batch_size):
        chunks.append(model.forward_features(to_float(images[i: i + batch_size]).to(dev), depth).cpu())
        done = min(i + batch_size, len(images))
        if done == len(images) or (i // batch_size) % 10 == 0:
            progress(f"[{label}] {done}/{len(images)} images ({time.perf_counter() - start:.1f}s)")
    model.cpu()
    return torch.cat(chunks) if chunks else torch.empty(0)


def extract_features(model: SplitModel, split: Split, depth: int, data_version: str,
                     batch_size: int = 512) -> FeatureSet:
    """Extract the features of a whole split (train, validation and test images)."""
    model.check_depth(depth)
    return FeatureSet(cache_key(model, depth, data_version), depth,
                      extract(model, split.train_images, depth, batch_size, "features train"),
                      split.train_labels.clone(),
                      extract(model, split.test_images, depth, batch_size, "features test"),
                      split.test_labels.clone(),
                      extract(model, split.val_images, depth, batch_size, "features val"),
                      split.val_labels.clone())


def save_features(features: FeatureSet, folder: str | Path) -> Path:
    """Write ``folder/features.safetensors``; returns its path."""
    path = Path(folder) / FEATURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"train_features": features.train_features.contiguous(),
               "train_labels": features.train_labels, "test_features": features.test_features.contiguous(),
               "test_labels": features.test_labels, "val_features": features.val_features.contiguous(),
               "val_labels": features.val_labels}, str(path),
              {"key": features.key, "depth": str(features.depth), "format": str(FORMAT)})
    return canonical_safetensors(path)


def load_features(path: str | Path) -> FeatureSet:
    """Read a cache file written by ``save_features`` (format 2; an older file is refused)."""
    path = Path(path)
    if path.is_dir():
        path = path / FEATURES_FILE
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
        version = int(meta.get("format", "1"))
    except (SafetensorError, OSError, ValueError) as err:
        raise BadInput(f"feature cache {path} is unreadable: {err}") from None
    if version != FORMAT:
        raise BadInput(f"feature cache {path} has format {version}, this code reads format {FORMAT} "
                       "(validation features added); extract the features again")
    try:
        return FeatureSet(meta["key"], int(meta["depth"]), tensors["train_features"],
                          tensors["train_labels"], tensors["test_features"], tensors["test_labels"],
                          tensors["val_features"], tensors["val_labels"])
    except (KeyError, ValueError) as err:
        raise BadInput(f"feature cache {path} is unreadable: {err}") from None
