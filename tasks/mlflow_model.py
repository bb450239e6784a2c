"""The MLflow pytorch model of a version, made fast: our own models from a per-architecture template.

Our own models are logged as pt2 programs (torch.export; float images in [0, 1], normalized
inside). LAU changes weights, never the graph, so the exported program, its signature, input
example and environment files are the same for a parent and every candidate: the first model of an
architecture a process logs goes through ``mlflow.pytorch.save_model`` (export, signature inferred
from the example: ~0.4 s warm, seconds cold) and becomes that architecture's template; every later
one is the template with its own weights written into the program (~0.05 s). A program that does
not read every weight from its state dict (checked once per template, with a copy whose every
weight is perturbed) is never reused: such an architecture is saved by MLflow each time. An adopted
model is logged as the team's own module, pickled, by ``mlflow.pytorch.log_model`` (``serving_input``
says what it takes). tasks/mlflow_run.py uploads what is written here.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import datetime as dt
import hashlib
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.models import Model

from lau.adopt import AdoptedModel, team_module
from lau.models import ModelSpec, SplitModel

PYTORCH_PATH = "model"
PT2 = Path("data") / "model.pt2"
SERVABLE = ("MLmodel", PT2.as_posix())  # what a plain mlflow.pytorch.load_model reads of the folder


# ------------------------------------------------------------------ the pt2 template


@dataclass(frozen=True)
class _Template:
    folder: Path  # what mlflow.pytorch.save_model wrote for the architecture
    program: torch.export.ExportedProgram | None  # read back from it; weights swapped per model


_TEMPLATES: dict[str, _Template] = {}
_LOCK = threading.Lock()  # one swap-and-save at a time: the templates' programs are shared
_ROOT: list[Path] = []  # the process's template folder, removed at exit


def architecture_key(model: SplitModel) -> str:
    """What a template depends on: the model's class, spec, tensor names, shapes and dtypes, and
    the torch and MLflow versions (never the weights' values)."""
    tensors = sorted((name, tuple(t.shape), str(t.dtype)) for name, t in _named_tensors(model).items())
    payload = json.dumps({"class": f"{type(model).__module__}.{type(model).__qualname__}",
                          "spec": model.spec.to_json(), "tensors": tensors, "torch": torch.__version__,
                          "mlflow": mlflow.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def write_pytorch_model(model: SplitModel, target: Path) -> None:
    """The MLflow pytorch model of ``model`` (one of ours) in ``target``: the architecture's template
    with ``model``'s weights written into its program (or, for an architecture whose program turned
    out not to read every weight from its state dict, saved by MLflow from scratch)."""
    with _LOCK, torch.no_grad():
        key = architecture_key(model)
        if key not in _TEMPLATES:
            _TEMPLATES[key] = _make_template(model, key)
        template = _TEMPLATES[key]
        if template.program is None:
            _save_model(model, target)
            return
        _swap(template.program, model)
        shutil.copytree(template.folder, target, ignore=lambda d, names: [n for n in names if n == PT2.name])
        torch.export.save(template.program, target / PT2)


def stamp(folder: Path, *, model_id: str, run_id: str, artifact_path: str) -> None:
    """The MLmodel file of a template copy, as ``Model.log`` would have written it for this model."""
    info = Model.load(str(folder / "MLmodel"))
    info.model_id = info.model_uuid = model_id
    info.run_id, info.artifact_path = run_id, artifact_path
    info.utc_time_created = str(dt.datetime.now(dt.UTC).replace(tzinfo=None))
    example_files = [info.saved_input_example_info.get(k) for k in ("artifact_path", "serving_input_path")]
    info.model_size_bytes = sum((folder / name).stat().st_size for name in (*filter(None, example_files), PT2))
    info.save(str(folder / "MLmodel"))


def _make_template(model: SplitModel, key: str) -> _Template:
    """MLflow's own save of ``model``, and its program if swapping weights into it is proven to give
    another model's logits (a copy with every weight perturbed); else no program (saved each time)."""
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="lau-mlflow-templates-")))
        atexit.register(shutil.rmtree, _ROOT[0], True)
    folder = _ROOT[0] / key
    shutil.rmtree(folder, ignore_errors=True)
    _save_model(model, folder)
    program = torch.export.load(str(folder / PT2))
    other = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(1)
    for tensor in _named_tensors(other).values():
        if tensor.is_floating_point():
            tensor.mul_((1 + 0.1 * torch.randn(tensor.shape, generator=generator)).clamp_min(0.5))
    example = _example(model.spec, seed=2)
    if set(program.state_dict) - set(_named_tensors(other)):
        return _Template(folder, None)
    _swap(program, other)
    reproduced = torch.allclose(program.module()(example), other(example), rtol=1e-4, atol=1e-5)
    moved = not torch.allclose(other(example), model.eval()(example), rtol=1e-4, atol=1e-5)
    return _Template(folder, program if reproduced and moved else None)


def _save_model(model: SplitModel, folder: Path) -> None:
    mlflow.pytorch.save_model(model.eval(), str(folder), input_example=_example(model.spec, seed=0).numpy(),
                              pip_requirements=_pins())


def _example(spec: ModelSpec, seed: int) -> torch.Tensor:
    """Two seeded random images of the model's input shape (the same example every time)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, spec.in_channels, spec.image_size, spec.image_size, generator=generator)


def _swap(program: torch.export.ExportedProgram, model: SplitModel) -> None:
    """Write ``model``'s weights (and buffers) into ``program``, in place."""
    tensors = _named_tensors(model)
    for name, target in [*program.state_dict.items(), *program.constants.items()]:
        if name in tensors:
            target.copy_(tensors[name])


def _named_tensors(model: SplitModel) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _pins() -> list[str]:
    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]


# ------------------------------------------------------------------ adopted models


def log_adopted(model: AdoptedModel) -> Any:
    """Inside the active run: the team's module, pickled on purpose (so that a plain load returns
    their class). Returns MLflow's model info (model_uri, model_id)."""
    spec = model.spec
    normalized = model.normalize(torch.rand(2, spec.in_channels, spec.image_size, spec.image_size))
    with _quiet(logging.getLogger("mlflow.pytorch"), "Pickle or CloudPickle"):  # chosen on purpose, see above
        return mlflow.pytorch.log_model(team_module(model).eval(), name=PYTORCH_PATH, serialization_format="pickle",
                                        input_example=normalized.numpy(), metadata={"lau_input": serving_input(model)},
                                        pip_requirements=[*_pins(), *_library_pins()])


@contextlib.contextmanager
def _quiet(logger: logging.Logger, text: str) -> Iterator[None]:
    """Drops ``logger``'s records that contain ``text`` for the duration of the block."""
    def keep(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def serving_input(model: SplitModel) -> dict[str, Any]:
    """What the version's MLflow pytorch model takes: image size, and for an adopted model the
    per-channel mean and std its input must already be normalized with."""
    spec = model.spec
    if not isinstance(model, AdoptedModel):
        return {"images": f"float (N, {spec.in_channels}, {spec.image_size}, {spec.image_size}) in [0, 1]"}
    return {"images": f"float (N, {spec.in_channels}, {spec.image_size}, {spec.image_size}), normalized: "
                      "(x - mean) / std with x in [0, 1]",
            "image_size": spec.image_size, "mean": list(spec.mean), "std": list(spec.std),
            "class": f"{type(model.net).__module__}.{type(model.net).__qualname__}"}


def _library_pins() -> list[str]:
    """torchvision and timm as installed: the pickled module's class lives in one of them."""
    import timm
    import torchvision

    return [f"torchvision=={torchvision.__version__.split('+')[0]}", f"timm=={timm.__version__}"]
