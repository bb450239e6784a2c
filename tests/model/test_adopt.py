"""A team's own torchvision/timm classifier, adopted from its state dict, forgets a class with LAU:
only its head changes, and the engine checkpoint rebuilds it exactly, as the team's own class."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from lau.adopt import AdoptedModel, adopt
from lau.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from lau.config import DataConfig, Params
from lau.data import Split, prepare
from lau.features import extract_features
from lau.metrics import evaluate, outputs_from_features, per_class_accuracy
from lau.pipeline import unlearn_classes
from lau.utils import progress
from tests.adopt_helpers import HEADS, MEAN, SIDE, STD, TEAMS, normalized, train_team_model, write_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Split:
    """4 classes of coloured shapes, 20 PNGs each at 32x32 (15 train + 5 test per class)."""
    root = write_shapes(tmp_path_factory.mktemp("data") / "shapes", per_class=20, side=SIDE)
    return prepare(DataConfig(dataset="imagefolder", root=str(root), test_fraction=0.25))


def team_weights(arch: str, split: Split, folder: Path) -> tuple[nn.Module, dict[str, torch.Tensor], object]:
    """The team's network fine-tuned on the split, its state dict, and what it hands over (a file,
    or the state dict itself for the 344 MB ViT-B)."""
    team = TEAMS[arch]
    torch.manual_seed(0)
    net = team.make()
    train_team_model(net, net.get_submodule(team.trained), split, MEAN, STD)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if team.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "weights.safetensors"))
        return net, state, folder / "weights.safetensors"
    if team.suffix:
        torch.save(net.state_dict(), folder / f"weights{team.suffix}")
        return net, state, folder / f"weights{team.suffix}"
    return net, state, state


ARCHS = [pytest.param(a, marks=pytest.mark.slow) if a == "torchvision:vit_b_16" else a for a in TEAMS]


@pytest.mark.parametrize("arch", ARCHS)
def test_adopted_model_forgets_a_class_and_only_its_head_changes(arch: str, shapes: Split, tmp_path: Path) -> None:
    net, team_state, handed_over = team_weights(arch, shapes, tmp_path)
    start = time.perf_counter()
    model = adopt(arch, handed_over, num_classes=4, class_names=shapes.class_names, image_size=SIDE,
                  mean=MEAN, std=STD)
    adopted_s = time.perf_counter() - start
    assert type(model.net) is type(net) and model.spec.extra["head"] == HEADS[arch]
    assert list(model.state_dict()) == list(team_state)  # the team's keys, in their order

    start = time.perf_counter()
    features = extract_features(model, shapes, 1, "tests")
    extract_s = time.perf_counter() - start
    with torch.no_grad():  # the cached features give the team network's own outputs
        served = net.eval()(normalized(shapes.test_images, MEAN, STD))
    assert torch.allclose(outputs_from_features(model, features).test_logits, served, atol=1e-4)
    before = outputs_from_features(model, features)
    train_acc = per_class_accuracy(before.train_logits, before.train_labels, 4)
    test_acc = per_class_accuracy(before.test_logits, before.test_labels, 4)
    forget = max(range(4), key=lambda c: (test_acc[c], train_acc[c]))
    assert train_acc[forget] == 100 and test_acc[forget] > 0, (train_acc, test_acc)

    start = time.perf_counter()
    unlearned = unlearn_classes(Params(), model, features, (forget,))
    lau_s = time.perf_counter() - start
    progress(f"[adopt-test] {arch}: adopt {adopted_s:.2f}s, extract {extract_s:.2f}s, LAU {lau_s:.2f}s "
             f"({unlearned.result.steps} steps) on {len(shapes.train_labels)}+{len(shapes.test_labels)} images")
    metrics = evaluate(outputs_from_features(unlearned.candidate, features), (forget,), 4)["metrics"]
    assert metrics["forget_acc"] == 0 and metrics["test_forget_acc"] == 0, metrics

    candidate = unlearned.candidate
    head_keys = set(candidate.head_keys(1))
    assert head_keys == {f"{HEADS[arch]}.weight", f"{HEADS[arch]}.bias"}
    after = candidate.state_dict()
    for key, tensor in team_state.items():
        if key not in head_keys:
            assert torch.equal(after[key], tensor), f"{arch}: {key} moved"
    assert any(not torch.equal(after[k], team_state[k]) for k in head_keys)
    with torch.no_grad():  # the team's own module, as a server runs it, no longer predicts the class
        rows = shapes.test_labels == forget
        assert not (candidate.net(normalized(shapes.test_images[rows], MEAN, STD)).argmax(1) == forget).any()

    folder = save_checkpoint(candidate, tmp_path / "ckpt", depth=1)
    with safe_open(str(folder / WEIGHTS), "pt") as handle:
        assert set(handle.keys()) == set(team_state)
    loaded, config = load_checkpoint(folder)
    assert isinstance(loaded, AdoptedModel) and type(loaded.net) is type(net)
    assert loaded.spec == candidate.spec and config["spec"]["arch"] == arch
    reloaded = loaded.state_dict()
    for key, tensor in after.items():
        assert torch.equal(reloaded[key], tensor), key


def test_deeper_split_of_mobilenet_v3_changes_only_its_classifier(shapes: Split, tmp_path: Path) -> None:
    """MobileNetV3's classifier (Linear, Hardswish, Dropout, Linear) splits at depth 2 too."""
    arch = "torchvision:mobilenet_v3_small"
    net, team_state, weights = team_weights(arch, shapes, tmp_path)
    model = adopt(arch, weights, num_classes=4, image_size=SIDE, mean=MEAN, std=STD)
    assert model.num_blocks == 3  # depths 1 and 2
    features = extract_features(model, shapes, 2, "tests")
    assert features.train_features.shape[1] == 576  # the input of classifier.0
    before = outputs_from_features(model, features)
    test_acc = per_class_accuracy(before.test_logits, before.test_labels, 4)
    forget = max(range(4), key=lambda c: test_acc[c])

    unlearned = unlearn_classes(Params().replace("unlearn", depth=2), model, features, (forget,))

    metrics = evaluate(outputs_from_features(unlearned.candidate, features), (forget,), 4)["metrics"]
    assert metrics["forget_acc"] == 0, metrics
    after = unlearned.candidate.state_dict()
    changed = {k for k, v in team_state.items() if not torch.equal(after[k], v)}
    assert changed and changed <= set(unlearned.candidate.head_keys(2)) == {
        "classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias"}
