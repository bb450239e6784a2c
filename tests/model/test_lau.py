"""LAU on the shared small CNN (tests/conftest.py): it forgets, and it touches nothing but F_c."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

from lau.config import Params
from lau.data import Split, class_mask
from lau.errors import BadInput
from lau.features import FeatureSet
from lau.metrics import evaluate, outputs_from_features
from lau.models import SplitModel, clone
from lau.pipeline import unlearn_classes
from lau.unlearn import unlearn
from tests.conftest import serve_logits

Features = Callable[[int], FeatureSet]


def state_of(modules: list[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Every tensor (parameters and buffers: BatchNorm running stats, num_batches_tracked)."""
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def forget_metrics(model: SplitModel, features: FeatureSet, classes: tuple[int, ...], *,
                   with_probe: bool = False) -> dict:
    return evaluate(outputs_from_features(model, features), classes, model.spec.num_classes,
                    with_probe=with_probe)["metrics"]


def test_shared_model_recognises_the_class_before_unlearning(trained_model: SplitModel,
                                                             feature_sets: Features) -> None:
    """The precondition of every test below: there is something to forget."""
    metrics = forget_metrics(trained_model, feature_sets(1), (3,))
    assert metrics["forget_acc"] > 70 and metrics["test_retain_acc"] > 80


@pytest.mark.parametrize("depth", [1, 2])
def test_lau_forgets_class_3_and_freezes_the_feature_extractor(model: SplitModel, feature_sets: Features,
                                                                depth: int) -> None:
    params = Params()
    features = feature_sets(depth)
    extractor_before = state_of(model.feature_modules(depth))
    params_before = {k: v.detach().clone() for k, v in model.named_parameters()}

    candidate, result = unlearn(model, features, (3,), params.unlearn)

    metrics = forget_metrics(candidate, features, (3,))
    assert metrics["forget_acc"] == 0.0, metrics
    assert result.converged and (result.steps > 0 or depth > 1)  # depth 2: the hidden edit may suffice
    extractor_after = state_of(candidate.feature_modules(depth))
    assert extractor_after.keys() == extractor_before.keys()
    assert any("running_mean" in k for k in extractor_after) and any("num_batches_tracked" in k
                                                                      for k in extractor_after)
    for name, tensor in extractor_before.items():
        assert torch.equal(extractor_after[name], tensor), f"F_f tensor {name} moved"
    head_names = {f"blocks.{model.num_blocks - depth + i}.{k}"
                  for i, block in enumerate(model.blocks[model.num_blocks - depth:])
                  for k, _ in block.named_parameters()}
    changed = {k for k, v in candidate.named_parameters() if not torch.equal(v, params_before[k])}
    assert changed and changed <= head_names, changed - head_names
    assert all(not p.requires_grad for m in candidate.feature_modules(depth) for p in m.parameters())
    assert all(not m.training for m in candidate.modules())


def test_lau_leaves_the_model_passed_in_untouched(model: SplitModel, feature_sets: Features) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = [p.requires_grad for p in model.parameters()]
    candidate, _ = unlearn(model, feature_sets(1), (3,), Params().unlearn)
    assert candidate is not model
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert [p.requires_grad for p in model.parameters()] == grads_before
    assert forget_metrics(model, feature_sets(1), (3,))["forget_acc"] > 70


def test_cached_evaluation_equals_the_full_model_on_images(feature_sets: Features, trained_model: SplitModel,
                                                           small_split: Split) -> None:
    """Evaluating a candidate on cached features gives what serving it on the images gives."""
    features = feature_sets(1)
    candidate, _ = unlearn(trained_model, features, (3,), Params().unlearn)
    from_cache = outputs_from_features(candidate, features).test_logits
    from_images = serve_logits(candidate, small_split.test_images)
    assert torch.allclose(from_cache, from_images, atol=1e-4)


@pytest.mark.xfail(Params().unlearn.margin >= 2.0, strict=True,
                   reason="with unlearn.margin 2 (default since 6869110) LAU stops at max_epochs 200 "
                          "on (3, 5) with forget_acc 0.83 (1 of 120 images); margin 1 converges in 15 steps")
def test_lau_forgets_several_classes_at_once(trained_model: SplitModel, feature_sets: Features) -> None:
    features = feature_sets(1)
    before = forget_metrics(trained_model, features, (3, 5))
    candidate, _ = unlearn(trained_model, features, (3, 5), Params().unlearn)
    after = forget_metrics(candidate, features, (3, 5))
    assert before["forget_acc"] > 70
    assert after["forget_acc"] == 0.0, after
    # no forget sample is moved onto a class that is forgotten too: they land on served classes
    outputs = outputs_from_features(candidate, features)
    rows = class_mask(outputs.train_labels, (3, 5))
    predicted = outputs.train_logits[rows].argmax(1)
    assert not class_mask(predicted, (3, 5)).any(), torch.bincount(predicted, minlength=10).tolist()


def test_lau_keeps_an_earlier_forgotten_class_unserved(trained_model: SplitModel,
                                                       feature_sets: Features) -> None:
    """A lineage: forget class 3's usual landing class first, then 3; 3s must not land on it."""
    features, cfg = feature_sets(1), Params().unlearn
    first, _ = unlearn(trained_model, features, (3,), cfg)
    rows = class_mask(features.train_labels, (3,))
    landing = int(torch.bincount(outputs_from_features(first, features).train_logits[rows].argmax(1)).argmax())
    parent, _ = unlearn(trained_model, features, (landing,), cfg)
    candidate, _ = unlearn(parent, features, (3,), cfg, blocked_classes=(landing,))
    predicted = outputs_from_features(candidate, features).train_logits[rows].argmax(1)
    assert not (predicted == landing).any() and not (predicted == 3).any()


def test_same_seed_same_result(trained_model: SplitModel, feature_sets: Features) -> None:
    features, cfg = feature_sets(1), Params().unlearn
    first, result_1 = unlearn(trained_model, features, (3,), cfg)
    second, result_2 = unlearn(trained_model, features, (3,), cfg)
    assert result_1.steps == result_2.steps
    for name, tensor in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], tensor), name
    assert evaluate(outputs_from_features(first, features), (3,), 10) == \
        evaluate(outputs_from_features(second, features), (3,), 10)


def test_lau_on_a_fresh_copy_can_repeat_on_another_class(model: SplitModel, feature_sets: Features) -> None:
    """unlearn() does not leave the shared model frozen or half-trained for the next request."""
    features, cfg = feature_sets(1), Params().unlearn
    unlearn(model, features, (3,), cfg)
    candidate, _ = unlearn(clone(model), features, (8,), cfg)
    assert forget_metrics(candidate, features, (8,))["forget_acc"] == 0.0


def test_deeper_lau_leaves_a_smaller_probe_residual(trained_model: SplitModel, feature_sets: Features) -> None:
    cfg = Params().unlearn
    probe = {}
    for depth in (1, 2):
        candidate, result = unlearn(trained_model, feature_sets(depth), (3,), cfg)
        metrics = forget_metrics(candidate, feature_sets(depth), (3,), with_probe=True)
        probe[depth] = (metrics["probe_forget_acc"], result.steps)
    assert probe[2][0] < probe[1][0], f"probe_forget_acc, steps by depth: {probe}"


def test_a_class_missing_from_the_lineage_data_is_refused(trained_model: SplitModel, feature_sets: Features) -> None:
    """No train image of class 5 in the features: its erasure cannot be shown, so no candidate."""
    features = feature_sets(1)
    keep = features.train_labels != 5
    without_5 = dataclasses.replace(features, train_features=features.train_features[keep],
                                    train_labels=features.train_labels[keep])
    with pytest.raises(BadInput, match=r"\[5\] have no train or no test images"):
        unlearn_classes(Params(), trained_model, without_5, (5,))
