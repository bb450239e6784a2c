"""The pieces of LAU (lau/unlearn.py) against hand-made tensors and an independent numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lau.config import UnlearnConfig
from lau.unlearn import (
    distill_loss,
    edit_hidden,
    lau_loss,
    masked_targets,
    not_unlearned,
    partial_pgd,
    unlearn_head,
)


def linear_teacher(weight: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
    return layer.requires_grad_(False)


# ------------------------------------------------------------------ Partial-PGD


def test_partial_pgd_raises_teacher_loss_inside_per_dimension_ball() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).requires_grad_(False)
    features = torch.randn(64, 16)
    labels = teacher(features).argmax(1)  # the teacher gets them right: the attack must move them off
    eps = torch.linspace(0.0, 1.5, 16)  # per dimension; dimension 0 may not move at all
    adv = partial_pgd(teacher, features, labels, eps, eps / 4, steps=6)

    clean_loss = F.cross_entropy(teacher(features), labels).item()
    attacked_loss = F.cross_entropy(teacher(adv), labels).item()
    assert attacked_loss > clean_loss + 0.1
    delta = (adv - features).abs()
    assert torch.all(delta <= eps + 1e-6), "left the L-inf ball of some dimension"
    assert torch.equal(adv[:, 0], features[:, 0]), "eps 0 must freeze that dimension"
    assert (delta[:, -1] > 0.9 * eps[-1]).float().mean() > 0.5, "the attack did not use its budget"
    assert not adv.requires_grad


def test_partial_pgd_larger_ball_hurts_more() -> None:
    torch.manual_seed(1)
    teacher = nn.Linear(8, 4).requires_grad_(False)
    features = torch.randn(32, 8)
    labels = teacher(features).argmax(1)
    losses = []
    for scale in (0.1, 0.5, 2.0):
        eps = torch.full((8,), scale)
        adv = partial_pgd(teacher, features, labels, eps, eps / 4, steps=5)
        losses.append(F.cross_entropy(teacher(adv), labels).item())
    assert losses[0] < losses[1] < losses[2]


# ------------------------------------------------------------------ the unlearned mask


def test_not_unlearned_margin_zero_is_still_correct() -> None:
    logits = torch.tensor([[5.0, 1.0, 0.0],    # correct by 4
                           [1.5, 1.0, 0.0],    # correct by 0.5
                           [1.0, 1.5, 0.0],    # wrong by 0.5
                           [0.0, 0.0, 2.0]])   # wrong by 2
    labels = torch.tensor([0, 0, 0, 0])
    assert not_unlearned(logits, labels).tolist() == [True, True, False, False]
    assert not_unlearned(logits, labels).tolist() == (logits.argmax(1) == labels).tolist()
    # with a margin, rows that are wrong by less than the margin still count as recognised
    assert not_unlearned(logits, labels, margin=1.0).tolist() == [True, True, True, False]
    assert not_unlearned(logits, labels, margin=3.0).tolist() == [True, True, True, True]


def test_not_unlearned_on_random_logits_matches_accuracy() -> None:
    torch.manual_seed(2)
    logits, labels = torch.randn(200, 7), torch.randint(0, 7, (200,))
    assert torch.equal(not_unlearned(logits, labels), logits.argmax(1) == labels)


def test_landing_on_a_blocked_class_is_not_unlearned() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0],    # true 0, predicted 1 (blocked), 2 served
                           [0.0, 1.0, 3.0]])   # true 0, predicted 2 (served)
    labels = torch.tensor([0, 0])
    assert not_unlearned(logits, labels).tolist() == [False, False]
    assert not_unlearned(logits, labels, blocked=(0, 1)).tolist() == [True, False]
    assert not_unlearned(logits, labels, margin=2.5, blocked=(0, 1)).tolist() == [True, True]


# ------------------------------------------------------------------ the loss


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_lau_loss_matches_hand_computation() -> None:
    student = np.array([[2.0, 0.5, -1.0], [0.1, 0.3, 1.2]])
    targets = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])  # probabilities
    temperature, alpha = 4.0, 0.3

    # (1 - a) * CE(student, argmax targets): argmax rows are 1 and 0
    log_p = np.log(_np_softmax(student))
    hard = -(log_p[0, 1] + log_p[1, 0]) / 2
    # a * T^2 * KL(softmax(targets / T) || softmax(student / T)), mean over the batch
    q = _np_softmax(targets / temperature)  # the double softmax
    log_s = np.log(_np_softmax(student / temperature))
    soft = float(np.sum(q * (np.log(q) - log_s))) / 2
    expected = (1 - alpha) * hard + alpha * temperature ** 2 * soft

    got = lau_loss(torch.tensor(student), torch.tensor(targets), temperature, alpha).item()
    assert got == pytest.approx(expected, rel=1e-9)


def test_lau_loss_alpha_extremes() -> None:
    student = torch.tensor([[1.0, 2.0, 0.0]])
    targets = torch.tensor([[0.8, 0.1, 0.1]])
    ce_only = lau_loss(student, targets, 4.0, 0.0).item()
    assert ce_only == pytest.approx(-math.log(math.exp(1) / (math.exp(1) + math.exp(2) + 1)), rel=1e-6)
    assert lau_loss(student, targets, 4.0, 1.0).item() != pytest.approx(ce_only)


def test_masked_targets_keep_own_probs_for_unlearned_rows() -> None:
    student = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 4.0]], requires_grad=True)
    mask = torch.tensor([True, False, True])
    attacked = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, -1.0]])  # one row per masked sample, in order
    targets = masked_targets(student, attacked, mask)

    own = torch.softmax(student.detach(), dim=1)
    assert torch.allclose(targets[1], own[1])
    assert torch.allclose(targets[0], torch.softmax(attacked[0], 0))
    assert torch.allclose(targets[2], torch.softmax(attacked[1], 0))
    assert torch.allclose(targets.sum(1), torch.ones(3))
    assert not targets.requires_grad, "targets must be constants for the student"


def test_masked_targets_without_masked_rows_are_own_probs() -> None:
    student = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    targets = masked_targets(student, torch.empty(0, 2), torch.tensor([False, False]))
    assert torch.allclose(targets, torch.softmax(student, 1))


def test_distill_loss_zero_for_identical_logits_positive_otherwise() -> None:
    torch.manual_seed(3)
    logits = torch.randn(10, 6)
    assert distill_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(logits, logits + torch.randn(10, 6), 4.0).item() > 1e-3


# ------------------------------------------------------------------ the loop on a hand-made head


def small_cfg(**changes: object) -> UnlearnConfig:
    base = dict(eps=2.0, step=0.5, pgd_steps=5, lr=0.05, margin=0.0, retain_weight=0.0, max_epochs=300)
    base.update(changes)
    return UnlearnConfig(**base)


def test_unlearn_head_moves_forget_samples_off_their_class() -> None:
    torch.manual_seed(4)
    head = linear_teacher([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0]]).requires_grad_(True)
    features = torch.tensor([1.0, 0.0]) + 0.1 * torch.randn(20, 2)
    labels = torch.zeros(20, dtype=torch.long)
    result = unlearn_head(head, features, labels, small_cfg(), torch.ones(2), blocked_classes=(0,))
    assert result.converged and result.steps > 0
    assert not (head(features).argmax(1) == 0).any()


def test_unlearn_head_stops_at_once_when_nothing_is_recognised() -> None:
    head = linear_teacher([[0.0, 0.0], [2.0, 0.0]]).requires_grad_(True)
    before = head.weight.detach().clone()
    result = unlearn_head(head, torch.ones(4, 2), torch.zeros(4, dtype=torch.long), small_cfg(),
                          torch.ones(2), blocked_classes=(0,))
    assert result.converged and result.steps == 0
    assert torch.equal(head.weight, before)


def test_unlearn_head_never_leaves_a_sample_on_a_blocked_class() -> None:
    """A forget sample already predicted as an earlier-forgotten class is moved to a served class."""
    head = linear_teacher([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, -1.0]]).requires_grad_(True)
    features = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1]])
    labels = torch.zeros(3, dtype=torch.long)
    assert head(features).argmax(1).tolist() == [1, 1, 1]  # on class 1, forgotten earlier
    result = unlearn_head(head, features, labels, small_cfg(), torch.ones(2), blocked_classes=(0, 1))
    predicted = head(features).argmax(1)
    assert result.converged
    assert not torch.isin(predicted, torch.tensor([0, 1])).any(), predicted.tolist()


# ------------------------------------------------------------------ hidden edit (depth >= 2)


def clustered(n_per_class: int = 60, classes: int = 4, dim: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    centres = torch.randn(classes, dim) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + torch.randn(len(labels), dim) * 0.5, labels


def test_hidden_edit_moves_forget_samples_onto_a_served_class_mean_and_keeps_the_rest() -> None:
    features, labels = clustered()
    torch.manual_seed(1)
    head = nn.Sequential(nn.Sequential(nn.Linear(12, 8), nn.ReLU()), nn.Linear(8, 4))
    linear, classifier_before = head[0][0], head[1].weight.detach().clone()
    with torch.no_grad():
        z_before = linear(features)
    served_means = torch.stack([z_before[labels == c].mean(0) for c in (0, 1, 2)])
    forget = labels == 3

    assert edit_hidden(head, features, labels, (3,), ridge=1e-6)

    with torch.no_grad():
        z_after = linear(features)
    to_target_before = torch.cdist(z_before[forget], served_means).min(1).values.mean()
    to_target_after = torch.cdist(z_after[forget], served_means).min(1).values.mean()
    assert to_target_after < 0.25 * to_target_before, (to_target_before, to_target_after)
    moved = (z_after[~forget] - z_before[~forget]).norm(dim=1).mean()
    assert moved < 0.05 * to_target_before, "the retain samples' hidden features moved"
    assert torch.equal(head[1].weight, classifier_before), "the edit touched the classifier (LAU's part)"


def test_a_larger_ridge_makes_a_smaller_edit() -> None:
    features, labels = clustered()
    sizes = []
    for ridge in (1e-3, 1.0):
        torch.manual_seed(1)
        head = nn.Sequential(nn.Sequential(nn.Linear(12, 8), nn.ReLU()), nn.Linear(8, 4))
        before = head[0][0].weight.detach().clone()
        edit_hidden(head, features, labels, (3,), ridge=ridge)
        sizes.append(float((head[0][0].weight.detach() - before).norm()))
    assert sizes[1] < sizes[0], sizes


def test_hidden_edit_leaves_a_head_without_a_hidden_linear_layer_alone() -> None:
    features, labels = clustered()
    head = nn.Sequential(nn.ReLU(), nn.Linear(12, 4))
    before = {k: v.clone() for k, v in head.state_dict().items()}
    assert not edit_hidden(head, features, labels, (3,), ridge=0.3)
    assert all(torch.equal(v, before[k]) for k, v in head.state_dict().items())
