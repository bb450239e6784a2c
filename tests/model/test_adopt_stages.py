"""`dvc repro` with a team's model: params.yaml names its architecture and its weights under
models/team/, the `train` stage adopts it instead of training, and the unlearning stages run on it
unchanged. The stages run in this process (``lau.stages.main``, exactly what dvc.yaml's commands
call), in a folder laid out like the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lau.config import DataConfig, Params
from lau.data import prepare
from lau.stages import main as stage
from tests.adopt_helpers import MEAN, SIDE, STD, TEAMS, train_team_model, write_shapes

ARCH = "timm:convnext_atto"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The shapes folder and a team's ConvNeXt fine-tuned on it (its state dict)."""
    shapes = write_shapes(tmp_path_factory.mktemp("data") / "shapes", per_class=20, side=SIDE)
    split = prepare(DataConfig(dataset="imagefolder", root=str(shapes), test_fraction=0.25))
    torch.manual_seed(0)
    net = TEAMS[ARCH].make()
    train_team_model(net, net.get_submodule(TEAMS[ARCH].trained), split, MEAN, STD)
    return shapes, {k: v.detach().clone() for k, v in net.state_dict().items()}


def workspace(folder: Path, shapes: Path, state: dict, weights: str = "models/team/weights.pt",
              arch: str = ARCH) -> Path:
    """params.yaml (the repository's, adopting the team's model) and the weights in models/team/."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(dataset="imagefolder", root=str(shapes), image_size=SIDE, test_fraction=0.25)
    params["model"].update(arch=arch, weights=weights, mean=list(MEAN), std=list(STD))
    params["gate"].update(max_retain_drop=50.0, max_total_retain_drop=50.0)  # 15 retain test images
    params["unlearn"]["forget_classes"] = [2]
    (folder / "models" / "team").mkdir(parents=True)
    torch.save(state, folder / "models" / "team" / "weights.pt")
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def test_the_train_stage_adopts_the_teams_model_and_the_unlearning_stages_run_on_it(
        team: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes, state = team
    monkeypatch.chdir(workspace(tmp_path, shapes, state))
    for name in ("prepare", "train", "featurize", "unlearn", "evaluate"):
        assert stage([name]) == 0, name

    original = load_file("models/original/model.safetensors")
    assert list(original) == sorted(state) and all(torch.equal(original[k], v) for k, v in state.items())
    config = json.loads(Path("models/original/config.json").read_text())
    assert config["spec"]["arch"] == ARCH and config["metadata"]["adopted_weights_sha256"]
    unlearned = load_file("models/unlearned/model.safetensors")
    moved = {k for k, v in state.items() if not torch.equal(unlearned[k], v)}
    assert moved and moved <= {"head.fc.weight", "head.fc.bias"}, moved
    metrics = json.loads(Path("metrics/unlearn.json").read_text())
    assert metrics["forget_acc"] == 0 and metrics["test_forget_acc"] == 0
    assert metrics["original"]["test_forget_acc"] > 0 and metrics["gate"]["passed"]
    train = json.loads(Path("metrics/train.json").read_text())
    assert train["train_images"] + train["val_images"] == 60 and train["test_images"] == 20


@pytest.mark.parametrize(("weights", "arch", "says"), [
    ("/elsewhere/weights.pt", ARCH, "must be a relative path under models/team/"),
    ("models/weights.pt", ARCH, "must be a relative path under models/team/"),
    ("", ARCH, "set model.weights to its state dict under models/team/"),
    ("models/team/weights.pt", "cnn", "model.weights is set but model.arch 'cnn' is one of ours"),
    ("models/team/weights.pt", "torchvision:resnet81", "torchvision has no model 'resnet81'"),
])
def test_a_team_model_the_stages_cannot_track_is_one_line(
        team: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        weights: str, arch: str, says: str) -> None:
    shapes, state = team
    monkeypatch.chdir(workspace(tmp_path, shapes, state, weights, arch))
    code = stage(["prepare"]) or stage(["train"])  # as `dvc repro`: the first failing stage stops it
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and not Path("models/original").exists()
    assert len([line for line in err if line.startswith("lau.stages")]) == 1 and says in err[-1], err


def test_params_take_the_team_models_preprocessing() -> None:
    """model.mean/std are lists of numbers; data.image_size 0 takes the size from the weights' metadata."""
    from lau.pipeline import resolve_params

    params = Params().replace("model", arch="timm:vit_tiny_patch16_224", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    assert params.model.mean == (0.5, 0.5, 0.5)
    assert resolve_params(params).data.image_size == 224
    assert resolve_params(params.replace("data", image_size=32)).data.image_size == 32
    assert resolve_params(Params()).data.image_size == 0  # our own models: the dataset's size
