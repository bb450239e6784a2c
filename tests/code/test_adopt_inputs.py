"""Adoption refuses every bad input with one line that says what to do; nothing is ever unpickled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from lau.adopt import AdoptedModel, adopt, check_data, check_split, read_state_dict
from lau.errors import BadInput
from lau.models import ModelSpec

ARCH = "torchvision:resnet18"


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    """A 4-class torchvision ResNet-18's state dict (shared: copy before changing it)."""
    torch.manual_seed(0)
    return tvm.resnet18(num_classes=4).state_dict()


def refusal(call, *args, **kwargs) -> str:
    """The BadInput message of ``call``, which must be one line."""
    with pytest.raises(BadInput) as err:
        call(*args, **kwargs)
    message = str(err.value)
    assert message and "\n" not in message, message
    return message


class Booby:
    """Unpickling this object creates ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_state_dict_file_is_read_as_saved(state: dict, tmp_path: Path) -> None:
    torch.save(state, tmp_path / "w.pt")
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pth")  # a training checkpoint
    for path in (tmp_path / "w.pt", tmp_path / "ckpt.pth"):
        loaded = read_state_dict(path)
        assert list(loaded) == list(state) and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_pickled_object_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    torch.save({"fc.weight": torch.zeros(4, 512), "extra": Booby(marker)}, tmp_path / "trap.pt")

    message = refusal(read_state_dict, tmp_path / "trap.pt")

    assert "never unpickled" in message and "torch.save(model.state_dict()" in message
    assert not marker.exists()
    torch.load(tmp_path / "trap.pt", weights_only=False)  # what a plain load would have done
    assert marker.exists()


def test_a_whole_model_file_is_refused_with_how_to_export_a_state_dict(tmp_path: Path) -> None:
    torch.save(tvm.mobilenet_v3_small(num_classes=4), tmp_path / "model.pt")
    message = refusal(adopt, "torchvision:mobilenet_v3_small", tmp_path / "model.pt", num_classes=4)
    assert "pickled Python object" in message and "safetensors.torch.save_file" in message


@pytest.mark.parametrize("content, expected", [
    (b"not a torch file at all", "is not a PyTorch state dict"),
    (None, "holds a list, not a state dict"),
])
def test_a_file_that_is_no_state_dict_is_refused(content: bytes | None, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    if content is None:
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    assert expected in refusal(read_state_dict, path)


def test_missing_and_corrupt_files_are_refused(tmp_path: Path) -> None:
    assert "not found" in refusal(read_state_dict, tmp_path / "absent.pt")
    (tmp_path / "w.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    assert "not a safetensors file" in refusal(read_state_dict, tmp_path / "w.safetensors")


@pytest.mark.parametrize("arch, expected", [
    ("torchvision:resnet19", "torchvision:resnet18"),
    ("timm:convnext_attoo", "timm:convnext_atto"),
    ("keras:resnet50", "torchvision:<builder>"),
    ("resnet18", "torchvision:<builder>"),
])
def test_an_unknown_builder_is_refused_naming_close_ones(arch: str, expected: str, state: dict) -> None:
    assert expected in refusal(adopt, arch, state, num_classes=4)


def test_weights_that_do_not_fit_name_the_first_misfit_key(state: dict) -> None:
    missing = {k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}
    assert "missing key 'layer1.0.conv1.weight'" in refusal(adopt, ARCH, missing, num_classes=4)

    extra = {**state, "layer5.weight": torch.zeros(1)}
    assert "unexpected key 'layer5.weight'" in refusal(adopt, ARCH, extra, num_classes=4)

    gray = {**state, "conv1.weight": torch.zeros(64, 1, 7, 7)}
    assert "'conv1.weight' has shape (64, 1, 7, 7), torchvision:resnet18 expects (64, 3, 7, 7)" in refusal(
        adopt, ARCH, gray, num_classes=4)

    wrapped = {f"module.{k}": v for k, v in state.items()}  # saved from nn.DataParallel
    assert "strip its prefix" in refusal(adopt, ARCH, wrapped, num_classes=4)

    vgg_head = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert "missing key 'fc.weight'" in refusal(adopt, ARCH, vgg_head, num_classes=4)


def test_a_head_module_that_does_not_exist_lists_candidates(state: dict) -> None:
    message = refusal(adopt, ARCH, state, num_classes=4, head="classifier")
    assert "'classifier' does not exist" in message and "candidates: fc" in message


def test_an_architecture_without_a_known_head_lists_candidates() -> None:
    squeeze = tvm.squeezenet1_0(num_classes=4).state_dict()  # its classifier is a Conv2d
    message = refusal(adopt, "torchvision:squeezenet1_0", squeeze, num_classes=4)
    assert "no classification module found" in message and "classifier.1" in message


def test_a_head_that_is_not_a_linear_layer_is_refused(state: dict) -> None:
    assert "is a Sequential, not a Linear" in refusal(adopt, ARCH, state, num_classes=4, head="layer4")


def test_a_head_that_is_not_the_last_step_is_refused() -> None:
    torch.manual_seed(0)
    net = tvm.mobilenet_v3_small(num_classes=4).eval()
    spec = ModelSpec(arch="torchvision:mobilenet_v3_small", num_classes=4, in_channels=3, image_size=32,
                     extra={"head": "classifier.0", "builder_kwargs": {}})
    assert "is not the last step" in refusal(check_split, AdoptedModel(spec, net))


def test_timm_splits_at_its_own_classifier_only() -> None:
    import timm

    weights = timm.create_model("resnet18", num_classes=4).state_dict()
    assert "own classifier ('fc')" in refusal(adopt, "timm:resnet18", weights, num_classes=4, head="layer4")


def test_a_dataset_with_another_class_count_is_refused(state: dict) -> None:
    message = refusal(adopt, ARCH, state, num_classes=3)
    assert "the data has 3 classes but the head 'fc' of these weights has 4 outputs" in message
    assert "3 class names for 4 classes" in refusal(adopt, ARCH, state, num_classes=4, class_names=("a", "b", "c"))


def test_data_that_does_not_fit_an_adopted_model_is_refused(state: dict) -> None:
    model = adopt(ARCH, state, num_classes=4, image_size=32)
    assert "5 classes" in refusal(check_data, model, 5, 3)
    assert "1 channels" in refusal(check_data, model, 4, 1)
    check_data(model, 4, 3)


def test_bad_preprocessing_flags_are_refused(state: dict) -> None:
    assert "std must be > 0" in refusal(adopt, ARCH, state, num_classes=4, mean=(0.5,) * 3, std=(0.0,) * 3)
    assert "mean has 3 values but std has 2" in refusal(adopt, ARCH, state, num_classes=4, mean=(0.5,) * 3,
                                                        std=(0.2, 0.2))
    assert "1 or 3 values" in refusal(adopt, ARCH, state, num_classes=4, mean=(0.5, 0.5), std=(0.2, 0.2))
    assert "unknown torchvision weights" in refusal(adopt, ARCH, state, num_classes=4,
                                                   weights_meta="ResNet18_Weights.NOPE")


def test_an_image_size_the_network_cannot_take_is_refused() -> None:
    import timm

    weights = {"head.weight": torch.zeros(4, 768)}
    assert "cannot be built with {'image_size': 30}" in refusal(adopt, "torchvision:vit_b_16", weights,
                                                                num_classes=4, image_size=30)
    atto = timm.create_model("convnext_atto", num_classes=4).state_dict()
    assert "does not run on 2x2 images" in refusal(adopt, "timm:convnext_atto", atto, num_classes=4, image_size=2)
