"""A team's weights for adoption: a state-dict file on disk, or one logged in MLflow.

``runs:/<run_id>/<path>`` and ``models:/<name>/<version>`` (or ``@alias``) are downloaded with
MLflow's own client; the one state-dict file among the artifacts (``state_dict.pth`` as
``mlflow.pytorch.log_state_dict`` writes it, or a ``.safetensors``/``.pt``/``.pth`` file) is what
gets adopted. An MLflow *model* (an ``MLmodel`` file: a whole module, pickled or pt2) is refused
before anything in it is read.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import mlflow
import yaml
from prefect import task

from lau.config import Params
from lau.data import Split
from lau.errors import BadInput
from lau.models import SplitModel
from lau.pipeline import adopt_original
from tasks.context import Context
from tasks.policy import IO, MATH
from tasks.registry import MlflowRefused, mlflow_errors

MLFLOW_SCHEMES = ("runs:/", "models:/")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
STATE_DICT_HINT = ("log the state dict instead: mlflow.pytorch.log_state_dict(model.state_dict(), 'weights') "
                   "in a run, then --from runs:/<run_id>/weights")


def is_mlflow_uri(weights: str) -> bool:
    return weights.startswith(MLFLOW_SCHEMES)


@task(name="fetch the team's weights", **IO)
def fetch_weights(ctx: Context, weights: str) -> Path:
    """The state-dict file to adopt: ``weights`` itself, or downloaded from MLflow into the work dir."""
    if not is_mlflow_uri(weights):
        path = Path(weights)
        if not path.is_file():
            raise BadInput(f"weights file not found: {path}")
        return path
    return download_weights(weights, ctx.settings.work_dir / "adopt" / hashlib.sha256(weights.encode()).hexdigest()[:16])


def download_weights(uri: str, target: Path) -> Path:
    """MLflow's artifacts at ``uri`` into ``target`` (replaced), and the state-dict file among them."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        with mlflow_errors():
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    except MlflowRefused as err:
        raise BadInput(f"{uri}: {err}") from None
    except OSError as err:
        raise BadInput(f"{uri}: nothing to download there ({err.strerror or err})") from None
    return state_dict_file(local, uri)


def state_dict_file(path: Path, uri: str) -> Path:
    """The one weights file at ``path`` (a file, or a folder of artifacts)."""
    if path.is_file():
        candidates = [path] if path.suffix in WEIGHT_SUFFIXES else []
    else:
        mlmodel = path / "MLmodel"
        if mlmodel.is_file():
            flavors = sorted((yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}))
            raise BadInput(f"{uri} is an MLflow model ({', '.join(flavors)}: a whole module, never loaded here), "
                           f"not a state dict; {STATE_DICT_HINT}")
        candidates = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not candidates:
        raise BadInput(f"{uri} holds no state dict (.safetensors, .pt or .pth); {STATE_DICT_HINT}")
    if len(candidates) > 1:
        names = ", ".join(str(p.relative_to(path)) for p in candidates[:4])
        raise BadInput(f"{uri} holds several weight files ({names}): name one, e.g. "
                       f"{uri.rstrip('/')}/{candidates[0].relative_to(path)}")
    return candidates[0]


@task(name="adopt the team's model", **MATH)
def adopt_model(params: Params, split: Split, weights: Path) -> SplitModel:
    """The team's classifier with its weights, checked against the data (lau.pipeline.adopt_original)."""
    return adopt_original(params, split, weights)
