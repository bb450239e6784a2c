"""The pieces of gate-aware LAU's search (lau/search.py) on hand-made tensors."""

from __future__ import annotations

import torch

from lau.search import CandidateRecord, choose, retain_drop, stratified_rows


def record(name: str, converged: bool, drop: float | None) -> CandidateRecord:
    return CandidateRecord(name, 3, converged, drop, 0.0, 0.01)


def test_choose_prefers_converged_then_least_drop_then_order() -> None:
    assert choose([record("rows", True, 0.4), record("full", True, 0.1)]) == 1
    assert choose([record("rows", False, -2.0), record("full", True, 3.0)]) == 1, "must forget first"
    assert choose([record("rows", True, 0.1), record("full", True, 0.1)]) == 0, "tie: the earlier one"
    assert choose([record("rows", True, None), record("full", True, None)]) == 0


def test_retain_drop_is_parent_minus_candidate_in_points() -> None:
    labels = torch.tensor([0, 1, 1, 2])
    parent = torch.eye(3)[[0, 1, 1, 2]]  # all right
    candidate = torch.eye(3)[[0, 2, 1, 2]]  # one wrong
    assert retain_drop(parent, candidate, labels) == 25.0
    assert retain_drop(candidate, parent, labels) == -25.0
    assert retain_drop(parent[:0], candidate[:0], labels[:0]) is None


def test_stratified_rows_takes_per_class_rows_of_every_kept_class_seeded() -> None:
    labels = torch.tensor([0] * 50 + [1] * 7 + [2] * 30 + [3] * 20)[torch.randperm(107, generator=torch.Generator().manual_seed(0))]
    rows = stratified_rows(labels, 10, (3,), torch.Generator().manual_seed(1))
    assert torch.bincount(labels[rows], minlength=4).tolist() == [10, 7, 10, 0]
    assert torch.equal(rows, rows.sort().values) and len(set(rows.tolist())) == len(rows)
    again = stratified_rows(labels, 10, (3,), torch.Generator().manual_seed(1))
    other = stratified_rows(labels, 10, (3,), torch.Generator().manual_seed(2))
    assert torch.equal(rows, again) and not torch.equal(rows, other)
    everything = stratified_rows(labels, 0, (3,), torch.Generator().manual_seed(1))
    assert len(everything) == 87


def test_gather_puts_validation_forget_images_into_d_f_for_lau_only() -> None:
    """Gate-aware LAU's D_f is every train and validation image of the forgotten classes; the
    paper's is the training images alone."""
    import dataclasses

    from lau.config import UnlearnConfig
    from lau.features import FeatureSet
    from lau.search import gather

    generator = torch.Generator().manual_seed(0)
    features = FeatureSet("k", 1, torch.rand(40, 4, generator=generator), torch.arange(40) % 4,
                          torch.rand(8, 4, generator=generator), torch.arange(8) % 4,
                          torch.rand(12, 4, generator=generator), torch.arange(12) % 4)
    lau = gather(features, (1,), UnlearnConfig(retain_per_class=5))
    assert len(lau.forget_labels) == 10 + 3 and set(lau.forget_labels.tolist()) == {1}
    assert torch.bincount(lau.retain_labels, minlength=4).tolist() == [5, 0, 5, 5]
    assert torch.bincount(lau.val_retain_labels, minlength=4).tolist() == [3, 0, 3, 3]
    paper = gather(features, (1,), dataclasses.replace(UnlearnConfig(), method="lau_paper"))
    assert len(paper.forget_labels) == 10
