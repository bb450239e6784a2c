"""The MLflow side: runs, the engine checkpoint, the pytorch model, versions, tags and the alias.

Every version carries the tags of DESIGN.md under the ``lau.`` prefix; ``lau.weights_sha256`` is the
checkpoint's hash, checked again whenever the pipeline loads a version.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from lau.checkpoint import WEIGHTS, load_checkpoint
from lau.errors import BadInput
from lau.models import SplitModel
from lau.utils import file_sha256, progress
from tasks.common import fault_point
from tasks.settings import InfraError

TAG = "lau."
CHECKPOINT_PATH = "checkpoint"
PYTORCH_PATH = "model"

# No HTTP retries inside the MLflow client: the Prefect tasks retry (tasks.common.IO), and retries
# layered on retries multiply. With 3 here, an S3 outage behind MLflow's artifact proxy (~9 s per
# failed upload) kept `lau forget` retrying for ~4 minutes before it could exit 3.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# Its download progress bars would fill stderr, where `lau` keeps its one error line readable.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass(frozen=True)
class Version:
    """A registered version and the tags the pipeline reads."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str]

    def tag(self, key: str, default: str = "") -> str:
        return self.tags.get(TAG + key, default)

    @property
    def forgotten(self) -> tuple[int, ...]:
        return tuple(json.loads(self.tag("forgotten_classes", "[]")))

    @property
    def excluded(self) -> tuple[int, ...]:
        return tuple(json.loads(self.tag("excluded_classes", "[]")))

    @property
    def depth(self) -> int:
        return int(self.tag("depth", "1"))

    @classmethod
    def of(cls, mv: ModelVersion) -> Version:
        return cls(mv.name, str(mv.version), mv.run_id, dict(mv.tags or {}))


def infra(err: Exception) -> Exception:
    """A service failure (retryable, exit 3), or the error itself when MLflow refused the request."""
    if isinstance(err, RestException) and err.get_http_status_code() < 500:
        return RuntimeError(f"MLflow refused the request: {str(err).splitlines()[0][:300]}")
    return InfraError(f"MLflow at {mlflow.get_tracking_uri()} failed: {str(err).splitlines()[0][:200]}")


class Registry:
    """One registered model in the MLflow registry."""

    def __init__(self, name: str, alias: str = "champion"):
        self.name, self.alias = name, alias
        self.client = MlflowClient()

    def champion(self) -> Version | None:
        try:
            return Version.of(self.client.get_model_version_by_alias(self.name, self.alias))
        except RestException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise infra(err) from None
        except MlflowException as err:
            raise infra(err) from None

    def require_champion(self) -> Version:
        champion = self.champion()
        if champion is None:
            raise BadInput(f"model '{self.name}' has no '{self.alias}' version; run `lau train` first")
        return champion

    def get(self, version: str) -> Version:
        try:
            return Version.of(self.client.get_model_version(self.name, str(version)))
        except RestException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise BadInput(f"model '{self.name}' has no version {version}") from None
            raise infra(err) from None
        except MlflowException as err:
            raise infra(err) from None

    def versions(self) -> list[Version]:
        try:
            found = self.client.search_model_versions(f"name = '{self.name}'", max_results=1000)
        except MlflowException as err:
            raise infra(err) from None
        return sorted((Version.of(v) for v in found), key=lambda v: int(v.version))

    def find_by_request(self, request_id: str) -> Version | None:
        """The version a request already produced (a crashed run's registration), if any."""
        for version in self.versions():
            if request_id in version.tag("request_ids").split(",") and not version.tag("superseded_by"):
                return version
        return None

    def load(self, version: Version, work_dir: Path) -> tuple[SplitModel, dict]:
        """Download and rebuild the engine checkpoint (safetensors + JSON; nothing unpickled),
        checking its weights against the sha256 recorded at registration. A local copy that fails
        the check is fetched again; a stored copy that fails it, or does not load, is refused with
        InfraError: the registry's artifact is damaged, no request is at fault (it stays retryable)."""
        target = work_dir / "checkpoints" / self.name / version.version
        recorded = version.tag("weights_sha256")
        if (target / WEIGHTS).is_file() and recorded and file_sha256(target / WEIGHTS) != recorded:
            progress(f"[registry] local copy of version {version.version} of '{self.name}' is damaged; "
                     "downloading it again")
            _rmtree(target)
        if not (target / WEIGHTS).is_file():
            if target.exists():
                _rmtree(target)  # an incomplete copy
            try:
                with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
                    path = Path(self.client.download_artifacts(version.run_id, CHECKPOINT_PATH, tmp))
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        path.rename(target)  # atomic; never replaces a copy that another process is reading
                    except OSError:
                        if not (target / WEIGHTS).is_file():
                            raise
            except MlflowException as err:
                raise infra(err) from None
        what = f"version {version.version} of '{self.name}'"
        if recorded and file_sha256(target / WEIGHTS) != recorded:
            _rmtree(target)
            raise InfraError(f"{what}: the stored checkpoint does not match the sha256 recorded at "
                             "registration (tampered or damaged); refusing to load it")
        try:
            return load_checkpoint(target)
        except BadInput as err:
            _rmtree(target)
            raise InfraError(f"{what}: the stored checkpoint does not load ({err}); refusing it") from None

    def register(self, run_id: str, model_uri: str, model_id: str, tags: dict[str, Any]) -> Version:
        """A new version with every tag set at creation (a version never exists untagged).
        Idempotent per request: a retry after a lost response returns the version already made."""
        for request_id in filter(None, str(tags.get("request_ids") or "").split(",")):
            existing = self.find_by_request(request_id)
            if existing is not None:
                return existing
        try:
            self.client.get_registered_model(self.name)
        except RestException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise infra(err) from None
            try:
                self.client.create_registered_model(
                    self.name, description="Image classifier served by alias; unlearned by LAU.")
            except RestException as create_err:  # a concurrent first registration
                if create_err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise infra(create_err) from None
        try:
            mv = self.client.create_model_version(self.name, model_uri, run_id=run_id, model_id=model_id,
                                                  tags={TAG + k: str(v) for k, v in tags.items()})
        except MlflowException as err:
            raise infra(err) from None
        fault_point("version")
        return Version.of(mv)

    def promote(self, version: Version) -> None:
        try:
            self.client.set_registered_model_alias(self.name, self.alias, version.version)
        except MlflowException as err:
            raise infra(err) from None

    def set_tag(self, version: Version, key: str, value: Any) -> None:
        try:
            self.client.set_model_version_tag(self.name, version.version, TAG + key, str(value))
        except MlflowException as err:
            raise infra(err) from None


def log_model_artifacts(model: SplitModel, checkpoint_dir: Path) -> Any:
    """Inside an active run: the engine checkpoint, and an MLflow pytorch model (pt2) that a plain
    MLflow client loads. Returns the logged model's info (model_uri, model_id)."""
    mlflow.log_artifacts(str(checkpoint_dir), CHECKPOINT_PATH)
    example = torch.rand(2, model.spec.in_channels, model.spec.image_size, model.spec.image_size)
    info = mlflow.pytorch.log_model(model.eval(), name=PYTORCH_PATH, input_example=example.numpy(),
                                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                                      f"mlflow=={mlflow.__version__}"])
    return info


def log_dataset(name: str, data_version: str, uri: str, split_sizes: dict) -> None:
    """The prepared data as an MLflow run input whose digest is its DVC md5."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    dataset = MetaDataset(resolve_dataset_source(uri), name=name, digest=data_version[:32])
    mlflow.log_input(dataset, context="training", tags={"dvc_md5": data_version,
                                                        **{k: str(v) for k, v in split_sizes.items()}})


def code_commit() -> str:
    """The git commit of the running code (LAU_CODE_COMMIT overrides; 'unknown' outside git)."""
    if os.environ.get("LAU_CODE_COMMIT"):
        return os.environ["LAU_CODE_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[1])
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def experiment(model_name: str) -> str:
    """Set (creating if needed) the model's experiment; returns its id."""
    try:
        return mlflow.set_experiment(f"lau/{model_name}").experiment_id
    except MlflowException as err:
        raise infra(err) from None


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

