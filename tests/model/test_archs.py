"""Every registered backbone honours the feature/head contract, and LAU works on each of them."""

from __future__ import annotations

import pytest
import torch

from lau.config import DataConfig, ModelConfig, Params, TrainConfig
from lau.data import Split, prepare
from lau.errors import BadInput
from lau.features import extract_features
from lau.metrics import outputs_from_features, per_class_accuracy
from lau.models import MODELS, ModelSpec, SplitModel, build_model
from lau.train import fit, new_model
from lau.unlearn import unlearn
from tests.conftest import serve_logits


@pytest.fixture(scope="module")
def four_digits() -> Split:
    """Digits 0-3 at 16x16, 50 per class (35 train + 5 validation + 10 test): 4 classes, grayscale."""
    split = prepare(DataConfig(dataset="digits", image_size=16, max_per_class=50,
                               excluded_classes=tuple(range(4, 10))))
    return Split("digits4", split.train_images, split.train_labels, split.test_images, split.test_labels,
                 split.class_names[:4], val_images=split.val_images, val_labels=split.val_labels)


def extractor_state(model: SplitModel, depth: int) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone()
            for i, m in enumerate(model.feature_modules(depth)) for k, v in m.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg16", "vit_tiny"])
def test_arch_trains_extracts_and_forgets(arch: str, four_digits: Split) -> None:
    model = fit(new_model(four_digits, ModelConfig(arch=arch), seed=0), four_digits.train_images,
                four_digits.train_labels, TrainConfig(epochs=1, batch_size=32))
    features = extract_features(model, four_digits, 1, "tests")
    assert features.train_features.shape[0] == len(four_digits.train_labels)
    outputs = outputs_from_features(model, features)
    assert torch.allclose(outputs.test_logits, serve_logits(model, four_digits.test_images), atol=1e-4)

    # forget the class the (barely trained) model recognises best, so there is something to forget
    per_class = per_class_accuracy(outputs.train_logits, outputs.train_labels, 4)
    forget = max(range(4), key=lambda c: per_class[c])
    assert per_class[forget] > 50
    before = extractor_state(model, 1)

    candidate, _ = unlearn(model, features, (forget,), Params().unlearn)

    after = outputs_from_features(candidate, features)
    rows = after.train_labels == forget
    assert not (after.train_logits[rows].argmax(1) == forget).any(), f"{arch} still recognises {forget}"
    for name, tensor in extractor_state(candidate, 1).items():
        assert torch.equal(tensor, before[name]), f"{arch}: F_f tensor {name} moved"


@pytest.mark.slow
def test_resnet50_builds_and_runs_forward() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="resnet50", num_classes=3, in_channels=1, image_size=16)).eval()
    images = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        logits = model(images)
        features = model.forward_features(images, 1)
        assert torch.allclose(model.forward_head(features, 1), logits)
    assert logits.shape == (2, 3) and features.shape == (2, 2048)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["cnn", "vit_tiny"])
def test_depth_splits_the_model_anywhere(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch=arch, num_classes=3, in_channels=1, image_size=8)).eval()
    images = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        full = model(images)
        for depth in range(1, model.num_blocks):
            assert torch.allclose(model.forward_head(model.forward_features(images, depth), depth), full,
                                  atol=1e-5), depth
            assert len(model.feature_modules(depth)) == 1 + model.num_blocks - depth  # normalize + blocks


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(BadInput, match="cnn") as err:
        build_model(ModelSpec(arch="alexnet", num_classes=3, in_channels=1, image_size=16))
    assert all(name in str(err.value) for name in MODELS)


@pytest.mark.parametrize("depth", [0, -1, 4, 10])
def test_depth_out_of_range_is_bad_input(depth: int) -> None:
    model = build_model(ModelSpec(arch="cnn", num_classes=3, in_channels=1, image_size=8))
    assert model.num_blocks == 4
    with pytest.raises(BadInput, match="1-3"):
        model.forward_features(torch.rand(1, 1, 8, 8), depth)
    with pytest.raises(BadInput, match="1-3"):
        model.freeze_features(depth)
