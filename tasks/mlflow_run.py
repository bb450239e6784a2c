"""What a version's MLflow run holds, logged with few calls, in two parts.

The servable part goes out before the version exists: the run with its tags (set at creation),
params and metrics in one batch, the engine checkpoint, the evidence (``evaluation.json``), and the
logged pytorch model's ``MLmodel`` and program: all a plain ``mlflow.pytorch.load_model`` reads.
The uploads and the batch go out together on a thread pool.

The audit part can follow once the version serves: ``params.yaml``, the dataset input, the run ->
model link, the model's environment files and input example; then the run is ended and the logged
model marked READY, last, so that READY means complete. ``finish_run`` logs it; after a crash,
``missing_audit`` finds what a version still lacks (nothing when its model is READY) and the next
pass completes it. Nothing here creates the registered version: whoever calls ``log_servable``
registers it only after every upload has returned.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, LoggedModelOutput, LoggedModelStatus, Metric, Param, Run
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from lau.adopt import AdoptedModel
from lau.models import SplitModel
from tasks.mlflow_model import PYTORCH_PATH, SERVABLE, log_adopted, stamp, write_pytorch_model
from tasks.registry import CHECKPOINT_PATH

UPLOAD_THREADS = 8
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class RunContents:
    """Everything a version's run holds besides its tags."""

    model: SplitModel
    pytorch: Future[Path] | None  # its MLflow pytorch model folder, being written (None: adopted)
    checkpoint: Path  # the engine checkpoint folder, uploaded as ``checkpoint/``
    evidence: Path  # evaluation.json
    params_yaml: str  # params.yaml as the run used it
    params: dict[str, str]
    metrics: dict[str, float]
    dataset: DatasetInput


@dataclass(frozen=True)
class LoggedPytorch:
    """The logged pytorch model of a version: what its registered version points at."""

    model_uri: str
    model_id: str


@dataclass(frozen=True)
class Artifact:
    """A file to upload: its bytes, its name, and where (an artifact URI and a folder in it)."""

    root: str
    folder: str | None
    name: str
    data: bytes


@dataclass(frozen=True)
class AuditPart:
    """What a version's run lacks while it already serves (see the module doc)."""

    run_id: str
    model_id: str
    files: tuple[Artifact, ...]
    dataset: DatasetInput | None  # None when the run has it
    link: bool  # whether the run -> model link is still to log


def dataset_input(name: str, data_version: str, uri: str, split_sizes: dict) -> DatasetInput:
    """The prepared data as an MLflow run input whose digest is its DVC md5 (context: training)."""
    dataset = MetaDataset(resolve_dataset_source(uri), name=name, digest=data_version[:32])
    tags = {"dvc_md5": data_version, **{k: str(v) for k, v in split_sizes.items()}, "mlflow.data.context": "training"}
    return DatasetInput(dataset._to_mlflow_entity(), [InputTag(k, v) for k, v in tags.items()])


def create_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> Run:
    """A run with ``tags`` and the source tags ``mlflow.start_run`` would add, in one call."""
    return MlflowClient().create_run(experiment_id, run_name=run_name, tags=resolve_tags(tags))


def log_servable(run: Run, contents: RunContents, work: Path) -> tuple[LoggedPytorch, AuditPart | None]:
    """Log the servable part of ``contents`` in ``run``; returns the logged model and the audit part
    still to log (None: everything is logged and the run ended, as for an adopted model, whose
    module MLflow pickles and logs its own way). ``work``: a scratch folder of the caller's."""
    client, run_id = MlflowClient(), run.info.run_id
    params = [Param(k, v) for k, v in contents.params.items()]
    uploads = [*_uploads(run.info.artifact_uri, contents.checkpoint, CHECKPOINT_PATH),
               _upload(run.info.artifact_uri, contents.evidence, None)]
    if isinstance(contents.model, AdoptedModel):
        client.log_batch(run_id, params=params)  # before log_model, which copies them onto the model
        params_file = work / PARAMS_FILE
        params_file.write_text(contents.params_yaml)
        parallel([*uploads, _upload(run.info.artifact_uri, params_file, None),
                  lambda: client.log_inputs(run_id, datasets=[contents.dataset])])
        with mlflow.start_run(run_id=run_id):  # ended (FINISHED) with the block
            logged = log_adopted(contents.model)
            client.log_batch(run_id, metrics=_metrics(contents.metrics, logged.model_id))
        return LoggedPytorch(logged.model_uri, logged.model_id), None
    model = mlflow.initialize_logged_model(name=PYTORCH_PATH, source_run_id=run_id, params=contents.params,
                                           experiment_id=run.info.experiment_id)
    folder = contents.pytorch.result()
    stamp(folder, model_id=model.model_id, run_id=run_id, artifact_path=model.artifact_location)
    parallel([*uploads, *(_upload(model.artifact_location, folder / name, _parent(name)) for name in SERVABLE),
              lambda: client.log_batch(run_id, metrics=_metrics(contents.metrics, model.model_id), params=params)])
    audit = AuditPart(run_id, model.model_id, (
        Artifact(run.info.artifact_uri, None, PARAMS_FILE, contents.params_yaml.encode()),
        *model_audit_files(folder, model.artifact_location)), contents.dataset, link=True)
    return LoggedPytorch(f"models:/{model.model_id}", model.model_id), audit


def start_pytorch_model(model: SplitModel, folder: Path, pool: ThreadPoolExecutor) -> Future[Path] | None:
    """Write the MLflow pytorch model of one of our models into ``folder`` on ``pool`` (while the
    run is created); None for an adopted model (log_servable logs it MLflow's way)."""
    if isinstance(model, AdoptedModel):
        return None
    return pool.submit(lambda: write_pytorch_model(model, folder) or folder)


def model_audit_files(folder: Path, root: str) -> tuple[Artifact, ...]:
    """The files of a pytorch model folder that a plain load does not read (environment, example)."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return tuple(Artifact(root, _parent(name), Path(name).name, (folder / name).read_bytes())
                 for name in names if name not in SERVABLE)


def finish_run(audit: AuditPart) -> None:
    """Log the audit part, end the run, then mark the logged model READY (idempotent)."""
    client = MlflowClient()
    with tempfile.TemporaryDirectory(prefix="lau-audit-") as tmp:
        jobs = []
        for number, artifact in enumerate(audit.files):
            path = Path(tmp) / str(number) / artifact.name
            path.parent.mkdir()
            path.write_bytes(artifact.data)
            jobs.append(_upload(artifact.root, path, artifact.folder))
        if audit.dataset is not None:
            jobs.append(lambda: client.log_inputs(audit.run_id, datasets=[audit.dataset]))
        if audit.link:
            jobs.append(lambda: client.log_outputs(audit.run_id, [LoggedModelOutput(audit.model_id, 0)]))
        parallel(jobs)
    client.set_terminated(audit.run_id)
    client.finalize_logged_model(audit.model_id, LoggedModelStatus.READY)


def missing_audit(run_id: str, model_id: str, params_yaml: str, dataset: DatasetInput,
                  model_files: Callable[[str], tuple[Artifact, ...]]) -> AuditPart | None:
    """What a version's run still lacks after a crash (None: its model is READY, nothing).
    ``model_files(root)``: the model's audit files, made again (model_audit_files of a fresh folder)."""
    client = MlflowClient()
    model = client.get_logged_model(model_id)
    if model.status == LoggedModelStatus.READY:
        return None
    run = client.get_run(run_id)
    has_dataset = bool(run.inputs and run.inputs.dataset_inputs)
    linked = any(o.model_id == model_id for o in (run.outputs.model_outputs if run.outputs else []))
    return AuditPart(run_id, model_id, (Artifact(run.info.artifact_uri, None, PARAMS_FILE, params_yaml.encode()),
                                        *model_files(model.artifact_location)),
                     None if has_dataset else dataset, link=not linked)


def parallel(jobs: list[Callable[[], Any]]) -> None:
    """Run every job on a thread pool; the first failure is raised once all have ended."""
    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="lau-mlflow") as pool:
        futures = [pool.submit(job) for job in jobs]
    for future in futures:
        future.result()


def _upload(root: str, path: Path, folder: str | None) -> Callable[[], None]:
    return lambda: get_artifact_repository(root).log_artifact(str(path), folder)


def _uploads(root: str, folder: Path, prefix: str) -> list[Callable[[], None]]:
    """One upload per file of ``folder`` (flat), under ``prefix``."""
    return [_upload(root, path, prefix) for path in sorted(folder.iterdir()) if path.is_file()]


def _parent(name: str) -> str | None:
    parent = Path(name).parent.as_posix()
    return None if parent == "." else parent


def _metrics(values: dict[str, float], model_id: str) -> list[Metric]:
    """Step-0 run metrics, linked to the logged model (what ``log_model`` would copy onto it)."""
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0, model_id=model_id) for k, v in values.items()]
