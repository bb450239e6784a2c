"""Gate-aware LAU (lau/unlearn.py + lau/search.py) on the shared small CNN: it forgets the
validation images of the class too, keeps the candidate with the least validation retain drop,
reads a retain sample whose size does not grow with the data, and the paper's setting stays."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

from lau.config import Params, UnlearnConfig
from lau.data import class_mask
from lau.features import FeatureSet
from lau.models import SplitModel
from lau.search import CANDIDATES
from lau.unlearn import not_unlearned, unlearn

Features = Callable[[int], FeatureSet]


@torch.no_grad()
def logits(model: SplitModel, features: torch.Tensor) -> torch.Tensor:
    return model.blocks[-1](features)


def test_the_shared_split_has_validation_images_of_every_class(feature_sets: Features) -> None:
    features = feature_sets(1)
    assert features.has_val and set(features.val_labels.tolist()) == set(range(10))


def test_lau_forgets_the_validation_images_of_the_class_with_the_margin(trained_model: SplitModel,
                                                                       feature_sets: Features) -> None:
    features, cfg = feature_sets(1), Params().unlearn
    val_rows = class_mask(features.val_labels, (3,))
    assert (logits(trained_model, features.val_features[val_rows]).argmax(1) == 3).float().mean() > 0.7

    candidate, result = unlearn(trained_model, features, (3,), cfg)

    val_logits = logits(candidate, features.val_features[val_rows])
    assert not not_unlearned(val_logits, features.val_labels[val_rows], cfg.margin).any()
    n_forget = int(class_mask(features.train_labels, (3,)).sum() + val_rows.sum())
    assert result.converged and result.forget_rows == n_forget  # D_f = train + validation images of 3
    assert all(record.val_forget_acc == 0.0 for record in result.candidates if record.converged)


def test_lau_keeps_the_candidate_with_the_least_validation_retain_drop(
        trained_model: SplitModel, feature_sets: Features, monkeypatch: pytest.MonkeyPatch) -> None:
    """A careless candidate first (every weight of F_c, a large step, no retain term), then rows: both
    forget, the careless one loses validation accuracy, so rows is kept, and the drop reported is
    the one of the model returned."""
    import lau.unlearn

    careless = {"scope": "full", "lr": 0.2, "retain_weight": 0.0, "margin": 8.0}
    monkeypatch.setattr(lau.unlearn, "CANDIDATES", {"careless": careless, "rows": {"scope": "rows"}})
    features, cfg = feature_sets(1), Params().unlearn
    candidate, result = unlearn(trained_model, features, (3,), cfg)

    assert [record.name for record in result.candidates] == ["careless", "rows"]
    first, second = result.candidates
    assert first.converged and second.converged and first.val_retain_drop > second.val_retain_drop
    assert result.candidate == "rows" and result.val_retain_drop == second.val_retain_drop
    retain = ~class_mask(features.val_labels, (3,))
    before = (logits(trained_model, features.val_features[retain]).argmax(1) == features.val_labels[retain])
    after = (logits(candidate, features.val_features[retain]).argmax(1) == features.val_labels[retain])
    assert abs(100.0 * (before.float().mean() - after.float().mean()).item() - result.val_retain_drop) < 1e-3
    assert result.tags()["lau.candidate"] == "rows" and result.method == "lau"


def test_a_candidate_that_loses_nothing_on_validation_ends_the_search(
        trained_model: SplitModel, feature_sets: Features) -> None:
    _, result = unlearn(trained_model, feature_sets(1), (3,), Params().unlearn)
    assert list(CANDIDATES)[0] == "rows" and result.candidate == "rows"
    assert len(result.candidates) == 1 and result.val_retain_drop <= 0


def test_without_search_the_rows_scope_moves_no_retained_class_logit(trained_model: SplitModel,
                                                                     feature_sets: Features) -> None:
    """Only the forgotten class's output row changes: a retained image's prediction can only move
    off the forgotten class, never from one retained class to another."""
    features = feature_sets(1)
    cfg = dataclasses.replace(Params().unlearn, search=False, scope="rows")
    candidate, result = unlearn(trained_model, features, (3,), cfg)
    assert result.candidate == "rows" and len(result.candidates) == 1 and result.converged
    before, after = logits(trained_model, features.test_features), logits(candidate, features.test_features)
    served = [c for c in range(10) if c != 3]
    assert torch.equal(before[:, served], after[:, served])
    changed = before.argmax(1) != after.argmax(1)
    assert changed.any() and (before.argmax(1)[changed] == 3).all()


def test_the_papers_plain_setting_stays_selectable(trained_model: SplitModel, feature_sets: Features) -> None:
    features = feature_sets(1)
    cfg = dataclasses.replace(Params().unlearn, method="lau_paper")
    candidate, result = unlearn(trained_model, features, (3,), cfg)
    assert result.method == "lau_paper" and [r.name for r in result.candidates] == ["full"]
    n_train = int(class_mask(features.train_labels, (3,)).sum())
    assert result.forget_rows == n_train, "the paper's D_f is the training images of the class"
    assert result.retain_rows == 0 or result.candidates[0].converged  # retain-free: the sample is unused
    train_rows = class_mask(features.train_labels, (3,))
    assert not (logits(candidate, features.train_features[train_rows]).argmax(1) == 3).any()
    # every parameter of F_c moved, not only class 3's row (the paper's update)
    changed_rows = (candidate.blocks[-1].weight != trained_model.blocks[-1].weight).any(1)
    assert changed_rows.sum() > 1


def test_the_retain_sample_is_stratified_and_does_not_grow_with_the_data(trained_model: SplitModel,
                                                                         feature_sets: Features) -> None:
    features = feature_sets(1)
    cfg = dataclasses.replace(Params().unlearn, retain_per_class=16)
    _, small = unlearn(trained_model, features, (3,), cfg)
    bigger = dataclasses.replace(features, train_features=features.train_features.repeat(4, 1),
                                 train_labels=features.train_labels.repeat(4))
    _, large = unlearn(trained_model, bigger, (3,), cfg)
    assert small.retain_rows == large.retain_rows == 16 * 9
    _, everything = unlearn(trained_model, features, (3,), dataclasses.replace(cfg, retain_per_class=0))
    assert everything.retain_rows == int((features.train_labels != 3).sum())


def test_unlearn_config_defaults_match_params_yaml(repo_root) -> None:  # noqa: ANN001 - a Path
    """The gate-aware defaults are what params.yaml ships (no hidden second source of truth)."""
    from lau.config import load_params

    shipped = load_params(repo_root / "params.yaml").unlearn
    fields = ("method", "search", "scope", "retain_per_class", "val_per_class", "margin", "retain_weight")
    assert {f: getattr(shipped, f) for f in fields} == {f: getattr(UnlearnConfig(), f) for f in fields}


def test_lau_with_batches_smaller_than_d_f_still_forgets_every_row(trained_model: SplitModel,
                                                                   feature_sets: Features) -> None:
    """A step reads at most ``batch_size`` forget rows (its cost stays bounded however large D_f
    is); the stop test still covers all of them."""
    features = feature_sets(1)
    cfg = dataclasses.replace(Params().unlearn, batch_size=16)
    candidate, result = unlearn(trained_model, features, (3,), cfg)
    assert result.forget_rows > 100 and result.converged
    for part in ("train", "val"):
        rows = class_mask(getattr(features, f"{part}_labels"), (3,))
        part_logits = logits(candidate, getattr(features, f"{part}_features")[rows])
        assert not not_unlearned(part_logits, getattr(features, f"{part}_labels")[rows], cfg.margin).any(), part
