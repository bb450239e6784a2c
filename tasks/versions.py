"""Registry steps as Prefect tasks: load the champion, register a version, move the alias."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from prefect import task

from lau.checkpoint import CONFIG, save_checkpoint
from lau.models import SplitModel
from tasks.context import Context
from tasks.policy import IO, fault_point
from tasks.registry import (
    TAG,
    Version,
    experiment,
    log_dataset,
    log_model_artifacts,
    mlflow_errors,
    serving_input,
)
from tasks.tags import VersionTags


@dataclass(frozen=True)
class DataInput:
    """The prepared data a version was made from, logged as the MLflow run's dataset input."""

    name: str
    version: str  # DVC md5
    uri: str
    sizes: dict[str, int]


@task(name="load champion", **IO)
def load_champion(ctx: Context) -> tuple[Version, SplitModel]:
    """The serving version and its engine checkpoint (hash-checked, nothing unpickled)."""
    champion = ctx.registry.require_champion()
    model, _ = ctx.registry.load(champion, ctx.settings.work_dir)
    return champion, model


@task(name="read champion", **IO)
def read_champion(ctx: Context) -> Version | None:
    return ctx.registry.champion()


@task(name="find version of request", **IO)
def find_version(ctx: Context, request_id: str) -> Version | None:
    return ctx.registry.find_by_request(request_id)


@task(name="register version", **IO)
def register(ctx: Context, model: SplitModel, tags: VersionTags, *, run_name: str, metrics: dict[str, Any],
             evidence: dict[str, Any], plots_dir: Path | None, data: DataInput) -> Version:
    """One MLflow run (params, metrics, dataset input, plots, evidence, engine checkpoint, pytorch
    model), then a registered version carrying every tag from the start (with ``lau.serving_input``,
    what its pytorch model takes, derived from the model itself)."""
    mlflow_tags = {**tags.to_mlflow(), TAG + "serving_input": json.dumps(serving_input(model), sort_keys=True)}
    local = ctx.settings.work_dir / "checkpoints" / ctx.model_name  # Registry.load's local copies
    local.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=local, prefix=".registering-") as tmp:
        run_id, logged = _log_run(ctx, model, tags.depth, mlflow_tags, Path(tmp), run_name=run_name,
                                  metrics=metrics, evidence=evidence, plots_dir=plots_dir, data=data)
        version = ctx.registry.register(run_id, logged.model_uri, logged.model_id, mlflow_tags)
        keep_local_copy(Path(tmp) / "checkpoint", local / version.version)
    return version


def keep_local_copy(checkpoint: Path, target: Path) -> None:
    """The checkpoint just registered becomes the local copy of its version, so that the next flow
    on this machine does not download it again (Registry.load still checks its sha256)."""
    try:
        checkpoint.rename(target)
    except OSError:  # a copy is there already (downloaded by another process): keep it
        pass


def _log_run(ctx: Context, model: SplitModel, depth: int, mlflow_tags: dict[str, str], tmp: Path, *, run_name: str,
             metrics: dict[str, Any], evidence: dict[str, Any], plots_dir: Path | None, data: DataInput) -> tuple[str, Any]:
    """The MLflow run of a version: returns its id and the logged pytorch model's info; adds the
    checkpoint's sha256 to ``mlflow_tags``."""
    with mlflow_errors():
        experiment(ctx.model_name)
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.log_params(flat_params(ctx.params.to_dict()))
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                                if isinstance(v, (int, float)) and math.isfinite(float(v))})
            mlflow.log_dict(evidence, "evaluation.json")
            mlflow.log_text(yaml.safe_dump(ctx.params.to_dict(), sort_keys=False), "params.yaml")
            if plots_dir and plots_dir.is_dir():
                mlflow.log_artifacts(str(plots_dir), "plots")
            log_dataset(data.name, data.version, data.uri, data.sizes)
            checkpoint = save_checkpoint(model, tmp / "checkpoint", depth=depth, metadata={"tags": mlflow_tags})
            logged = log_model_artifacts(model, checkpoint)
            mlflow.set_tags(mlflow_tags)
            mlflow_tags[TAG + "weights_sha256"] = json.loads((checkpoint / CONFIG).read_text())["weights_sha256"]
            fault_point("register")
    return run.info.run_id, logged


@task(name="plots into the version's run", **IO)
def log_plots(ctx: Context, version: Version, plots_dir: Path) -> None:
    """The before/after plots beside the version's evidence (drawn while it was registered)."""
    with mlflow_errors():
        ctx.registry.client.log_artifacts(version.run_id, str(plots_dir), "plots")


@task(name="promote to champion", **IO)
def promote(ctx: Context, version: Version) -> None:
    ctx.registry.promote(version)


@task(name="tag version", **IO)
def tag(ctx: Context, version: Version, key: str, value: Any) -> None:
    ctx.registry.set_tag(version, key, value)


@task(name="read evidence of version", **IO)
def read_evidence(ctx: Context, version: Version) -> dict[str, Any]:
    """The evidence a version was registered with (for a run that crashed after registering)."""
    with mlflow_errors():
        return mlflow.artifacts.load_dict(f"runs:/{version.run_id}/evaluation.json")


def flat_params(tree: dict, prefix: str = "") -> dict[str, str]:
    """params.yaml as MLflow params: dotted keys, lists as JSON."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return out
