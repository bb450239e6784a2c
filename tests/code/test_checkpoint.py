"""Checkpoints: safetensors weights + JSON config, verified, never unpickled."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from lau.checkpoint import CONFIG, WEIGHTS, load_checkpoint, save_checkpoint
from lau.errors import BadInput
from lau.models import ModelSpec, SplitModel, build_model
from lau.utils import file_sha256


@pytest.fixture
def tiny_model() -> SplitModel:
    torch.manual_seed(0)
    spec = ModelSpec(arch="cnn", num_classes=4, in_channels=1, image_size=8, class_names=("a", "b", "c", "d"),
                     mean=(0.3,), std=(0.2,))
    model = build_model(spec)
    with torch.no_grad():  # non-default BatchNorm statistics, so the round trip must carry buffers too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.num_batches_tracked.fill_(7)
    return model.eval()


@pytest.fixture
def saved(tiny_model: SplitModel, tmp_path: Path) -> Path:
    return save_checkpoint(tiny_model, tmp_path / "ckpt", depth=2, metadata={"parent": "1"})


def images() -> torch.Tensor:
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def rewrite_sha(folder: Path) -> None:
    """What an attacker who also edits config.json would do: make the recorded hash match."""
    config = json.loads((folder / CONFIG).read_text())
    config["weights_sha256"] = file_sha256(folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config))


def test_round_trip_gives_identical_outputs(tiny_model: SplitModel, saved: Path) -> None:
    loaded, config = load_checkpoint(saved)
    assert not loaded.training
    assert loaded.spec == tiny_model.spec
    assert config["depth"] == 2 and config["metadata"] == {"parent": "1"}
    with torch.no_grad():
        assert torch.equal(loaded(images()), tiny_model(images()))
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_tampered_weights_are_refused(saved: Path) -> None:
    data = bytearray((saved / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (saved / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(BadInput, match="sha256"):
        load_checkpoint(saved)


def test_truncated_weights_are_refused(saved: Path) -> None:
    data = (saved / WEIGHTS).read_bytes()
    (saved / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="sha256"):
        load_checkpoint(saved)
    rewrite_sha(saved)  # even with a matching hash, a truncated file is not a checkpoint
    with pytest.raises(BadInput, match="safetensors"):
        load_checkpoint(saved)


class CreatesMarker:
    """A pickle payload: unpickling it would create a file (arbitrary code execution)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_disguised_as_safetensors_is_refused_without_unpickling(saved: Path, tmp_path: Path,
                                                                       writer: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"weights": CreatesMarker(marker)}
    if writer == "pickle":
        (saved / WEIGHTS).write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, saved / WEIGHTS)
    assert not marker.exists()
    with pytest.raises(BadInput, match="sha256"):
        load_checkpoint(saved)
    rewrite_sha(saved)
    with pytest.raises(BadInput, match="not a safetensors file"):
        load_checkpoint(saved)
    assert not marker.exists(), "the checkpoint loader unpickled the payload"


def test_unknown_arch_in_config_is_refused(saved: Path) -> None:
    config = json.loads((saved / CONFIG).read_text())
    config["spec"]["arch"] = "transformer9000"
    (saved / CONFIG).write_text(json.dumps(config))
    with pytest.raises(BadInput, match="transformer9000.*cnn"):
        load_checkpoint(saved)


def test_weights_of_another_shape_are_refused(saved: Path) -> None:
    config = json.loads((saved / CONFIG).read_text())
    config["spec"]["num_classes"] = 7
    (saved / CONFIG).write_text(json.dumps(config))
    with pytest.raises(BadInput, match="do not fit"):
        load_checkpoint(saved)


def test_incomplete_or_garbled_checkpoint_is_refused(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="incomplete"):
        load_checkpoint(tmp_path / "empty")
    (saved / CONFIG).write_text("{not json")
    with pytest.raises(BadInput, match=CONFIG):
        load_checkpoint(saved)
