"""The MLflow side: versions, tags, the alias and the engine checkpoint (what a version's run holds
is logged by tasks/mlflow_model.py).

Every version carries the ``lau.`` tags of tasks/tags.py; ``lau.weights_sha256`` is the
checkpoint's hash, checked again whenever the pipeline loads a version. Every MLflow call goes
through ``mlflow_errors``, the one translator of MLflow's exceptions into the pipeline's.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from lau.checkpoint import WEIGHTS, load_checkpoint
from lau.errors import BadInput
from lau.models import SplitModel
from lau.utils import file_sha256, progress
from tasks.policy import fault_point
from tasks.settings import InfraError

TAG = "lau."
CHECKPOINT_PATH = "checkpoint"

# No HTTP retries inside the MLflow client: the Prefect tasks retry (tasks.policy.IO), and retries
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
    source: str = ""  # what the version points at: models:/<logged model id> for the pipeline's own

    def tag(self, key: str, default: str = "") -> str:
        return self.tags.get(TAG + key, default)

    @property
    def forgotten(self) -> tuple[int, ...]:
        return tuple(json.loads(self.tag("forgotten_classes", "[]")))

    @property
    def excluded(self) -> tuple[int, ...]:
        return tuple(json.loads(self.tag("excluded_classes", "[]")))

    @property
    def root_version(self) -> str:
        """The lineage's root: the version itself when it is a root (trained, consolidated, adopted)."""
        return self.tag("root_version") or self.version

    @classmethod
    def of(cls, mv: ModelVersion) -> Version:
        return cls(mv.name, str(mv.version), mv.run_id, dict(mv.tags or {}), mv.source or "")


class MlflowRefused(RuntimeError):
    """MLflow answered 4xx to a well-authenticated call: no such model or version, already exists..."""

    def __init__(self, message: str, error_code: str):
        super().__init__(message)
        self.error_code = error_code

    @property
    def not_found(self) -> bool:
        return self.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class MlflowForbidden(InfraError):
    """MLflow refused the credentials (401) or the permission (403)."""


def translate(err: MlflowException) -> Exception:
    """A service failure or refused credentials (InfraError: exit 3, retryable once fixed), or a
    refusal of the call itself (MlflowRefused: a 4xx such as "no such version")."""
    first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
    status = err.get_http_status_code() if isinstance(err, RestException) else 500
    if (plain := re.search(r"error code (\d{3}) != 200", first)) is not None:  # a non-JSON answer
        status = int(plain.group(1))
    if status in (401, 403):
        return MlflowForbidden(f"MLflow at {mlflow.get_tracking_uri()} refused the credentials (HTTP {status}): "
                          "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")
    if isinstance(err, RestException) and status < 500:
        return MlflowRefused(f"MLflow refused the request: {first}", err.error_code)
    return InfraError(f"MLflow at {mlflow.get_tracking_uri()} failed: {first[:200]}")


@contextlib.contextmanager
def mlflow_errors() -> Iterator[None]:
    """Every MLflow call runs inside this: its exceptions leave as the pipeline's (see translate)."""
    try:
        yield
    except MlflowException as err:
        raise translate(err) from None


class Registry:
    """One registered model in the MLflow registry."""

    def __init__(self, name: str, alias: str = "champion"):
        self.name, self.alias = name, alias
        self.client = MlflowClient()
        self._exists = False  # seen to exist by this object: registering needs no lookup first

    def champion(self) -> Version | None:
        try:
            with mlflow_errors():
                return Version.of(self.client.get_model_version_by_alias(self.name, self.alias))
        except MlflowRefused as err:
            if err.not_found:  # no such model, or no such alias
                return None
            raise
        except MlflowForbidden:
            # MLflow's basic-auth answers 403 on the alias of a model that does not exist (its
            # permission lookup needs the model): tell that apart from a real refusal.
            if not self.exists():
                return None
            raise

    def exists(self) -> bool:
        """Whether the registered model exists (readable by these credentials)."""
        try:
            with mlflow_errors():
                self.client.get_registered_model(self.name)
            return True
        except MlflowRefused as err:
            if err.not_found:
                return False
            raise

    def require_champion(self) -> Version:
        champion = self.champion()
        if champion is None:
            raise BadInput(f"model '{self.name}' has no '{self.alias}' version; run `lau train` first")
        return champion

    def get(self, version: str) -> Version:
        try:
            with mlflow_errors():
                return Version.of(self.client.get_model_version(self.name, str(version)))
        except MlflowRefused as err:
            if err.not_found:
                raise BadInput(f"model '{self.name}' has no version {version}") from None
            raise

    def versions(self) -> list[Version]:
        with mlflow_errors():
            found = self.client.search_model_versions(f"name = '{self.name}'", max_results=1000)
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
        checked = False  # the local copy's hash was compared with the recorded one
        if (target / WEIGHTS).is_file() and recorded:
            checked = file_sha256(target / WEIGHTS) == recorded
            if not checked:
                progress(f"[registry] local copy of version {version.version} of '{self.name}' is damaged; "
                         "downloading it again")
                shutil.rmtree(target, ignore_errors=True)
        if not (target / WEIGHTS).is_file():
            self._download_checkpoint(version, target)
        what = f"version {version.version} of '{self.name}'"
        if recorded and not checked and file_sha256(target / WEIGHTS) != recorded:
            shutil.rmtree(target, ignore_errors=True)
            raise InfraError(f"{what}: the stored checkpoint does not match the sha256 recorded at "
                             "registration (tampered or damaged); refusing to load it")
        try:
            return load_checkpoint(target)
        except BadInput as err:
            shutil.rmtree(target, ignore_errors=True)
            raise InfraError(f"{what}: the stored checkpoint does not load ({err}); refusing it") from None

    def _download_checkpoint(self, version: Version, target: Path) -> None:
        shutil.rmtree(target, ignore_errors=True)  # an incomplete copy
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp, mlflow_errors():
            path = Path(self.client.download_artifacts(version.run_id, CHECKPOINT_PATH, tmp))
            try:
                path.rename(target)  # atomic; never replaces a copy that another process is reading
            except OSError:
                if not (target / WEIGHTS).is_file():
                    raise

    def ensure_registered_model(self) -> None:
        """Create the registered model on first use (a concurrent first registration is fine)."""
        if self._exists or self.exists():
            self._exists = True
            return
        try:
            with mlflow_errors():
                self.client.create_registered_model(
                    self.name, description="Image classifier served by alias; unlearned by LAU.")
        except MlflowRefused as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":  # else another process created it meanwhile
                raise
        self._exists = True

    def register(self, run_id: str, model_uri: str, model_id: str, tags: dict[str, str], *,
                 check_existing: bool = True) -> Version:
        """A new version with every tag set at creation (a version never exists untagged).
        Idempotent per request: a retry after a lost response returns the version already made.
        ``check_existing=False`` skips that lookup: only for a first try, made under the model's lock
        after the flow found no version of its request."""
        for request_id in filter(None, tags.get(TAG + "request_ids", "").split(",") if check_existing else []):
            existing = self.find_by_request(request_id)
            if existing is not None:
                return existing
        self.ensure_registered_model()
        try:
            with mlflow_errors():
                mv = self.client.create_model_version(self.name, model_uri, run_id=run_id, model_id=model_id,
                                                      tags=tags)
        except (MlflowRefused, MlflowForbidden):
            self._exists = False  # deleted meanwhile? the next try looks again
            raise
        fault_point("version")
        return Version.of(mv)

    def promote(self, version: Version) -> None:
        with mlflow_errors():
            self.client.set_registered_model_alias(self.name, self.alias, version.version)

    def set_tag(self, version: Version, key: str, value: Any) -> None:
        with mlflow_errors():
            self.client.set_model_version_tag(self.name, version.version, TAG + key, str(value))


def code_commit() -> str:
    """The git commit of the running code (LAU_CODE_COMMIT overrides; 'unknown' outside git)."""
    if os.environ.get("LAU_CODE_COMMIT"):
        return os.environ["LAU_CODE_COMMIT"]
    return _git_commit()


@functools.lru_cache(maxsize=1)
def _git_commit() -> str:
    """Asked once per process: the code a process runs is the code it imported."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[1])
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_EXPERIMENTS: dict[tuple[str, str], str] = {}  # (tracking URI, experiment name) -> id, seen by this process


def experiment(model_name: str) -> str:
    """The id of the model's experiment (created if needed; looked up once per process)."""
    key = (mlflow.get_tracking_uri(), f"lau/{model_name}")
    if key not in _EXPERIMENTS:
        with mlflow_errors():
            _EXPERIMENTS[key] = mlflow.set_experiment(key[1]).experiment_id
    return _EXPERIMENTS[key]


def forget_experiment(model_name: str) -> None:
    """Look the model's experiment up again next time (a run could not be created in it)."""
    _EXPERIMENTS.pop((mlflow.get_tracking_uri(), f"lau/{model_name}"), None)

