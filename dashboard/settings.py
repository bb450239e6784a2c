"""What the dashboard reads and where: params.yaml's SLO and model name, the services, the viewer's
credentials and the addresses its links point to. All from the environment, read once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lau.config import load_params
from lau.errors import BadInput


@dataclass(frozen=True)
class Slo:
    """How long an erasure request may stay open, and when it turns amber on the way there."""

    deadline_s: float
    warning_fraction: float

    @property
    def warning_s(self) -> float:
        return self.deadline_s * self.warning_fraction

    def state(self, age_s: float) -> str:
        """``ok`` (green), ``warn`` (amber: past the warning fraction) or ``late`` (red: past the deadline)."""
        if age_s >= self.deadline_s:
            return "late"
        return "warn" if age_s >= self.warning_s else "ok"


@dataclass(frozen=True)
class Settings:
    default_model: str
    alias: str  # the registry alias of the serving version (registry.alias)
    slo: Slo
    bucket: str
    s3_endpoint: str | None
    s3_key_id: str | None  # the viewer's key when LAU_VIEWER_AWS_* are set, else the process's own
    s3_secret: str | None
    mlflow_uri: str | None
    mlflow_ui: str | None  # where links to MLflow versions point (LAU_MLFLOW_UI_URL, else the tracking URI)
    prefect_ui: str | None  # where links to flow runs point (LAU_PREFECT_UI_URL, else PREFECT_API_URL minus /api)
    ledger_ttl_s: float = 2.0  # LAU_DASHBOARD_LEDGER_TTL_S: views this close to the last S3 listing reuse it
    registry_ttl_s: float = 10.0  # LAU_DASHBOARD_REGISTRY_TTL_S: the same for MLflow's versions and champion


def load_settings(params_path: str | os.PathLike | None = None, model: str | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from params.yaml (LAU_PARAMS) and the environment ``source .stack/env`` sets."""
    env = os.environ if environ is None else environ
    params = load_params(Path(params_path or env.get("LAU_PARAMS", "params.yaml")))
    viewer = bool(env.get("LAU_VIEWER_AWS_ACCESS_KEY_ID") and env.get("LAU_VIEWER_AWS_SECRET_ACCESS_KEY"))
    prefect_api = env.get("PREFECT_API_URL", "").rstrip("/")
    prefect_ui = env.get("LAU_PREFECT_UI_URL") or (prefect_api.removesuffix("/api") if prefect_api else None)
    mlflow_uri = env.get("MLFLOW_TRACKING_URI") or None
    return Settings(
        default_model=model or params.registry.model_name, alias=params.registry.alias,
        slo=Slo(params.slo.erasure_deadline_days * 86400.0, params.slo.warning_fraction),
        bucket=env.get("LAU_BUCKET") or params.storage.bucket,
        s3_endpoint=(env.get("LAU_S3_ENDPOINT") or env.get("MLFLOW_S3_ENDPOINT_URL")
                     or env.get("AWS_ENDPOINT_URL_S3") or None),
        s3_key_id=env.get("LAU_VIEWER_AWS_ACCESS_KEY_ID" if viewer else "AWS_ACCESS_KEY_ID"),
        s3_secret=env.get("LAU_VIEWER_AWS_SECRET_ACCESS_KEY" if viewer else "AWS_SECRET_ACCESS_KEY"),
        mlflow_uri=mlflow_uri,
        mlflow_ui=(env.get("LAU_MLFLOW_UI_URL") or mlflow_uri or "").rstrip("/") or None,
        prefect_ui=(prefect_ui or "").rstrip("/") or None,
        ledger_ttl_s=_seconds(env, "LAU_DASHBOARD_LEDGER_TTL_S", 2.0),
        registry_ttl_s=_seconds(env, "LAU_DASHBOARD_REGISTRY_TTL_S", 10.0),
    )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        raise BadInput(f"{name}={text!r}: expected a number of seconds") from None
    if not 0 <= value <= 3600:
        raise BadInput(f"{name}={text!r}: expected 0 to 3600 seconds")
    return value


def use_viewer_mlflow_account(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Make this process's MLflow client log in as the read-only viewer when LAU_VIEWER_USERNAME /
    LAU_VIEWER_PASSWORD are set (the dashboard process only: it never writes). True if it did."""
    user, password = environ.get("LAU_VIEWER_USERNAME"), environ.get("LAU_VIEWER_PASSWORD")
    if not (user and password):
        return False
    environ["MLFLOW_TRACKING_USERNAME"], environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    return True
