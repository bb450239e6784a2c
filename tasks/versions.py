"""Registry steps as Prefect tasks: load the champion, register a version, move the alias."""

from __future__ import annotations

import json
import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from prefect import runtime, task

from lau.checkpoint import CONFIG, save_checkpoint
from lau.models import SplitModel
from tasks.context import Context
from tasks.mlflow_model import PYTORCH_PATH, serving_input, write_pytorch_model
from tasks.mlflow_run import (
    Artifact,
    AuditPart,
    LoggedPytorch,
    RunContents,
    create_run,
    dataset_input,
    finish_run,
    log_servable,
    missing_audit,
    model_audit_files,
    start_pytorch_model,
)
from tasks.policy import IO, fault_point
from tasks.registry import TAG, Version, experiment, forget_experiment, mlflow_errors
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


@task(name="end runs of crashed attempts", **IO)
def end_abandoned_runs(ctx: Context, request_id: str, attempt: int) -> list[str]:
    """An attempt killed while registering leaves an MLflow run RUNNING that no version points at.
    Called by a later attempt that found no version of its request (so every run of the request is
    such a run; the model's lock keeps any other attempt out): each one is ended FAILED and tagged
    ``lau.abandoned_at_attempt``. Returns their run ids."""
    with mlflow_errors():
        client = ctx.registry.client
        runs = client.search_runs([experiment(ctx.model_name)],
                                  f"tags.`{TAG}request_ids` LIKE '%{request_id}%' AND attributes.status = 'RUNNING'")
        for run in runs:
            client.set_tag(run.info.run_id, TAG + "abandoned_at_attempt", str(attempt))
            client.set_terminated(run.info.run_id, status="FAILED")
    return [run.info.run_id for run in runs]


@task(name="register version", **IO)
def register(ctx: Context, model: SplitModel, tags: VersionTags, *, run_name: str, metrics: dict[str, Any],
             evidence: dict[str, Any], plots_dir: Path | None, data: DataInput, defer_audit: bool = False) -> Version:
    """One MLflow run (params, metrics, dataset input, plots, evidence, engine checkpoint, pytorch
    model), then a registered version carrying every tag from the start (with ``lau.serving_input``,
    what its pytorch model takes, derived from the model itself). ``defer_audit``: return as soon as
    the version can serve; ``finish_version`` logs the rest of its run (tasks/mlflow_run.py)."""
    mlflow_tags = {**tags.to_mlflow(), TAG + "serving_input": json.dumps(serving_input(model), sort_keys=True)}
    local = ctx.settings.work_dir / "checkpoints" / ctx.model_name  # Registry.load's local copies
    local.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=local, prefix=".registering-") as tmp:
        run_id, logged, audit = _log_run(ctx, model, tags.depth, mlflow_tags, Path(tmp), run_name=run_name,
                                         metrics=metrics, evidence=evidence, plots_dir=plots_dir, data=data)
        with mlflow_errors():
            if audit is not None and not defer_audit:
                finish_run(audit)
            # A first try runs under the model's lock after the flow found no version of this request;
            # a retry (its response lost?) looks for the version it may have made.
            version = ctx.registry.register(run_id, logged.model_uri, logged.model_id, mlflow_tags,
                                            check_existing=runtime.task_run.run_count != 1)
        if audit is not None and defer_audit:
            _AUDIT[run_id] = audit
        keep_local_copy(Path(tmp) / "checkpoint", local / version.version)
    return version


@task(name="audit part of the version's run", **IO)
def finish_version(ctx: Context, version: Version) -> None:
    """What a version registered with ``defer_audit`` still lacks in its run (params.yaml, dataset
    input, the model's environment files...), logged once it serves; after a crash, found from what
    MLflow holds and made again (nothing for a version whose logged model is READY)."""
    model_id = version.source.removeprefix("models:/") if version.source.startswith("models:/") else ""
    with mlflow_errors():
        audit = _AUDIT.get(version.run_id)
        if audit is None and model_id:
            dataset = dataset_input(version.tag("dataset", "dataset"), version.tag("data_version"),
                                    version.tag("data_uri"), {})
            audit = missing_audit(version.run_id, model_id, _params_yaml(ctx), dataset,
                                  lambda root: _model_files(ctx, version, root))
        if audit is not None:
            finish_run(audit)
    _AUDIT.pop(version.run_id, None)


_AUDIT: dict[str, AuditPart] = {}  # run id -> the audit part registered with defer_audit, not yet logged


def _model_files(ctx: Context, version: Version, root: str) -> tuple[Artifact, ...]:
    """The audit files of a version's pytorch model, written again from its checkpoint."""
    model, _ = ctx.registry.load(version, ctx.settings.work_dir)
    with tempfile.TemporaryDirectory(prefix="lau-model-") as tmp:
        write_pytorch_model(model, Path(tmp) / "model")
        return model_audit_files(Path(tmp) / "model", root)


def _params_yaml(ctx: Context) -> str:
    return yaml.safe_dump(ctx.params.to_dict(), sort_keys=False)


def keep_local_copy(checkpoint: Path, target: Path) -> None:
    """The checkpoint just registered becomes the local copy of its version, so that the next flow
    on this machine does not download it again (Registry.load still checks its sha256)."""
    try:
        checkpoint.rename(target)
    except OSError:  # a copy is there already (downloaded by another process): keep it
        pass


def _log_run(ctx: Context, model: SplitModel, depth: int, mlflow_tags: dict[str, str], tmp: Path, *, run_name: str,
             metrics: dict[str, Any], evidence: dict[str, Any], plots_dir: Path | None,
             data: DataInput) -> tuple[str, LoggedPytorch, AuditPart | None]:
    """The MLflow run of a version, its tags set at creation: returns its id, the logged pytorch
    model and the audit part still to log; adds the checkpoint's sha256 to ``mlflow_tags``."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lau-pytorch-model") as pool, mlflow_errors():
        pytorch = start_pytorch_model(model, tmp / PYTORCH_PATH, pool)  # written while the run is created
        checkpoint = save_checkpoint(model, tmp / "checkpoint", depth=depth, metadata={"tags": dict(mlflow_tags)})
        (tmp / "evaluation.json").write_text(json.dumps(evidence, indent=2))
        contents = RunContents(model, pytorch, checkpoint, tmp / "evaluation.json", _params_yaml(ctx),
                               flat_params(ctx.params.to_dict()),
                               {k: float(v) for k, v in metrics.items()
                                if isinstance(v, (int, float)) and math.isfinite(float(v))},
                               dataset_input(data.name, data.version, data.uri, data.sizes))
        try:
            run = create_run(experiment(ctx.model_name), run_name, mlflow_tags)
        except MlflowException:
            forget_experiment(ctx.model_name)  # deleted since this process looked it up?
            raise
        logged, audit = log_servable(run, contents, tmp)
        if plots_dir and plots_dir.is_dir():
            ctx.registry.client.log_artifacts(run.info.run_id, str(plots_dir), "plots")
        fault_point("register")
    mlflow_tags[TAG + "weights_sha256"] = json.loads((checkpoint / CONFIG).read_text())["weights_sha256"]
    return run.info.run_id, logged, audit


@task(name="plots into the version's run", **IO)
def log_plots(ctx: Context, version: Version, plots_dir: Path) -> None:
    """The before/after plots beside the version's evidence (drawn while it was registered)."""
    with mlflow_errors():
        ctx.registry.client.log_artifacts(version.run_id, str(plots_dir), "plots")


@task(name="promote to champion", **IO)
def promote(ctx: Context, version: Version) -> None:
    ctx.registry.promote(version)


@task(name="promote to champion over its parent", **IO)
def promote_over_parent(ctx: Context, version: Version) -> Version | None:
    """Read the champion; promote ``version`` unless a champion other than its parent (or itself)
    holds the alias. Returns that newer champion (nothing promoted), else None. One task, not two:
    each Prefect task run costs the Prefect server ~40 ms of CPU, on the deletion's two cores."""
    current = ctx.registry.champion()
    if current is not None and current.version not in (version.tag("parent_version"), version.version):
        return current
    if current is None or current.version != version.version:
        ctx.registry.promote(version)
    return None


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
