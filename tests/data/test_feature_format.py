"""The feature cache's format 2 (lau/features.py): validation features travel with train and test,
and a cache written in the old format is a miss (another key) and, read directly, refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lau.data import Split
from lau.errors import BadInput
from lau.features import FEATURES_FILE, FORMAT, FeatureSet, cache_key, load_features, save_features
from lau.models import SplitModel


def test_validation_features_are_extracted_and_round_trip(feature_sets: Callable[[int], FeatureSet],
                                                          small_split: Split, tmp_path: Path) -> None:
    features = feature_sets(1)
    assert torch.equal(features.val_labels, small_split.val_labels)
    assert features.val_features.shape == (len(small_split.val_labels), *features.train_features.shape[1:])
    loaded = load_features(save_features(features, tmp_path))
    assert torch.equal(loaded.val_features, features.val_features)
    assert torch.equal(loaded.val_labels, features.val_labels)


def test_the_cache_key_names_the_format(trained_model: SplitModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old caches are a miss: the format is part of the key, so format 1 files have other keys."""
    import lau.features

    key = cache_key(trained_model, 1, "data-v1")
    monkeypatch.setattr(lau.features, "FORMAT", 1)
    assert cache_key(trained_model, 1, "data-v1") != key


def test_a_format_1_file_is_refused_with_one_clear_line(tmp_path: Path) -> None:
    save_file({"train_features": torch.rand(4, 3), "train_labels": torch.arange(4),
               "test_features": torch.rand(2, 3), "test_labels": torch.arange(2)},
              str(tmp_path / FEATURES_FILE), {"key": "k", "depth": "1"})
    with pytest.raises(BadInput, match=f"format 1, this code reads format {FORMAT}"):
        load_features(tmp_path)
