"""Registry steps as Prefect tasks: load the champion, register a version, move the alias."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import yaml
from prefect import task

from lau.checkpoint import save_checkpoint
from lau.models import SplitModel
from lau.utils import file_sha256
from tasks.common import IO, Context, fault_point
from tasks.registry import Version, experiment, infra, log_dataset, log_model_artifacts


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
def register(ctx: Context, model: SplitModel, *, run_name: str, tags: dict[str, Any], metrics: dict,
             evaluation: dict, plots_dir: Path | None, data: dict, depth: int) -> Version:
    """One MLflow run (params, metrics, dataset input, plots, engine checkpoint, pytorch model),
    then a registered version carrying every tag from the start."""
    try:
        experiment(ctx.model_name)
        with mlflow.start_run(run_name=run_name) as run, tempfile.TemporaryDirectory() as tmp:
            flat = _flatten(ctx.params.to_dict())
            mlflow.log_params(flat)
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                                if isinstance(v, (int, float)) and not math.isnan(float(v))})
            mlflow.log_dict(evaluation, "evaluation.json")
            mlflow.log_text(yaml.safe_dump(ctx.params.to_dict(), sort_keys=False), "params.yaml")
            if plots_dir and plots_dir.is_dir():
                mlflow.log_artifacts(str(plots_dir), "plots")
            log_dataset(data["name"], data["version"], data["uri"], data.get("sizes", {}))
            checkpoint = save_checkpoint(model, Path(tmp) / "checkpoint", depth=depth,
                                         metadata={"tags": {k: str(v) for k, v in tags.items()}})
            logged = log_model_artifacts(model, checkpoint)
            mlflow.set_tags({f"lau.{k}": str(v) for k, v in tags.items()})
            all_tags = {**tags, "weights_sha256": file_sha256(checkpoint / "model.safetensors")}
            fault_point("register")
        return ctx.registry.register(run.info.run_id, logged.model_uri, logged.model_id, all_tags)
    except mlflow.exceptions.MlflowException as err:
        raise infra(err) from None


@task(name="promote to champion", **IO)
def promote(ctx: Context, version: Version) -> None:
    ctx.registry.promote(version)


@task(name="tag version", **IO)
def tag(ctx: Context, version: Version, key: str, value: Any) -> None:
    ctx.registry.set_tag(version, key, value)


@task(name="read evaluation of version", **IO)
def read_evaluation(ctx: Context, version: Version) -> dict:
    """The evaluation a version was registered with (for a run that crashed after registering)."""
    try:
        return mlflow.artifacts.load_dict(f"runs:/{version.run_id}/evaluation.json")
    except mlflow.exceptions.MlflowException as err:
        raise infra(err) from None


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return out
