"""Where the orchestration layer finds its services and files: all from the environment.

``source .stack/env`` (written by ``make up``) sets everything for the local stack; a production
deployment sets the same variables (see README, "Pointing it at real services").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lau.config import Params, load_params


class InfraError(RuntimeError):
    """A service (S3, MLflow, Prefect) is unreachable or failing after retries: exit 3."""


@dataclass(frozen=True)
class Settings:
    params_path: Path
    bucket: str
    s3_endpoint: str | None
    work_dir: Path  # local cache of features, checkpoints, prepared data

    @property
    def feature_dir(self) -> Path:
        return self.work_dir / "features"


def settings(params: Params | None = None, params_path: str | os.PathLike | None = None) -> Settings:
    """Settings from the environment, with params.yaml's bucket as the fallback."""
    path = Path(params_path or os.environ.get("LAU_PARAMS", "params.yaml"))
    params = params or load_params(path)
    endpoint = (os.environ.get("LAU_S3_ENDPOINT") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
                or os.environ.get("AWS_ENDPOINT_URL_S3") or None)
    return Settings(params_path=path, bucket=os.environ.get("LAU_BUCKET") or params.storage.bucket,
                    s3_endpoint=endpoint,
                    work_dir=Path(os.environ.get("LAU_WORK_DIR", ".lau-work")))


def require_stack() -> None:
    """Fail fast, in one line, when the stack's variables are missing."""
    missing = [v for v in ("MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
               if not os.environ.get(v)]
    if missing:
        raise InfraError(f"{', '.join(missing)} not set: run `make up` and `source .stack/env` "
                         "(or point them at your services)")
