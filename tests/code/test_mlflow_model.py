"""The servable model of a version, written from a per-architecture template (tasks/mlflow_model.py):
whatever a plain ``mlflow.pytorch.load_model`` loads must compute that version's own logits, never
those of the model the template was made from."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from lau.models import ModelSpec, build_model
from tasks import mlflow_model

SPEC = ModelSpec("cnn", 4, 1, 12, tuple("abcd"), (0.5,), (0.25,))


def model(seed: int):  # noqa: ANN201 - a SplitModel
    torch.manual_seed(seed)
    return build_model(SPEC).eval()


def loaded_logits(folder: Path, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return mlflow.pytorch.load_model(str(folder))(images)


@pytest.fixture(autouse=True)
def fresh_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlflow_model, "_TEMPLATES", {})


def test_each_written_model_computes_its_own_logits(tmp_path: Path) -> None:
    images = torch.rand(16, 1, 12, 12)
    parent, candidate = model(0), model(1)
    mlflow_model.write_pytorch_model(parent, tmp_path / "parent")
    mlflow_model.write_pytorch_model(candidate, tmp_path / "candidate")  # from the parent's template
    assert len(mlflow_model._TEMPLATES) == 1, "the second model of the architecture reused no template"
    with torch.no_grad():
        expected = candidate(images)
        assert not torch.allclose(expected, parent(images))
    assert torch.allclose(loaded_logits(tmp_path / "candidate", images), expected, atol=1e-5)
    assert torch.allclose(loaded_logits(tmp_path / "parent", images), parent(images), atol=1e-5)
    written = {p.relative_to(tmp_path / "candidate").as_posix() for p in (tmp_path / "candidate").rglob("*")
               if p.is_file()}
    assert written >= {"MLmodel", "data/model.pt2", "requirements.txt", "input_example.json"}


def test_a_program_that_ignores_swapped_weights_is_never_reused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """If writing weights into the program did not change what it computes (here: the swap does
    nothing), the template check refuses the program and every model is saved from scratch."""
    monkeypatch.setattr(mlflow_model, "_swap", lambda program, model: None)
    images = torch.rand(16, 1, 12, 12)
    parent, candidate = model(0), model(1)
    mlflow_model.write_pytorch_model(parent, tmp_path / "parent")
    mlflow_model.write_pytorch_model(candidate, tmp_path / "candidate")
    (template,) = mlflow_model._TEMPLATES.values()
    assert template.program is None
    with torch.no_grad():
        assert torch.allclose(loaded_logits(tmp_path / "candidate", images), candidate(images), atol=1e-5)


def test_stamp_writes_the_ids_of_the_logged_model(tmp_path: Path) -> None:
    mlflow_model.write_pytorch_model(model(0), tmp_path / "m")
    mlflow_model.stamp(tmp_path / "m", model_id="m-123", run_id="r-9", artifact_path="mlflow-artifacts:/1/models/m-123")
    info = mlflow.models.Model.load(str(tmp_path / "m" / "MLmodel"))
    assert (info.model_id, info.model_uuid, info.run_id) == ("m-123", "m-123", "r-9")
    assert info.artifact_path == "mlflow-artifacts:/1/models/m-123" and "pytorch" in info.flavors
    assert info.model_size_bytes >= (tmp_path / "m" / "data" / "model.pt2").stat().st_size
