"""The reliability suite's harness: run the real `lau` command, break the local stack's services on
purpose, and read the registry and the ledger back to check the product's invariants (docs/design.md).

Every test talks to the stack that `make up` started (or the one LAU_STACK_DIR and the LAU_*_PORT
variables point at) through the variables of `.stack/env`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import warm_lau

REPO = Path(__file__).resolve().parents[2]
LAU = str(Path(sys.executable).with_name("lau"))
STATUSES = {"pending", "running", "registered", "rejected", "failed"}
RETRYABLE = {"pending", "running", "failed"}
FILED = re.compile(r"filed (req-[0-9a-z-]+) for classes")


def stack_configured() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


# In the ``pytestmark`` of every module that talks to the stack: skipped without it, except in CI,
# where a missing stack must fail, not pass quietly.
needs_stack = pytest.mark.skipif(not stack_configured() and not os.environ.get("CI"),
                                 reason="the local stack is not configured: run `make up` and `source .stack/env`")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- running `lau`


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def error_lines(self) -> list[str]:
        """The lines `lau` itself writes for an error (`lau: ...`); logs are the rest of stderr."""
        return [line for line in self.lines if line.startswith("lau:")]

    @property
    def request_ids(self) -> list[str]:
        return FILED.findall(self.stderr)

    def describe(self) -> str:
        return f"exit {self.code} after {self.seconds:.1f} s; stderr tail:\n" + "\n".join(self.lines[-15:])


class Live:
    """A `lau` process running in the background; its stderr is read as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.started = time.monotonic()
        self.proc = warm_lau.popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, bufsize=1)
        self._stderr: list[str] = []
        self._times: list[float] = []  # when each stderr line arrived (time.monotonic)
        self._changed = threading.Condition()
        self._stdout = ""
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._out.start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            with self._changed:
                self._stderr.append(line)
                self._times.append(time.monotonic())
                self._changed.notify_all()
        with self._changed:
            self._stderr.append("")  # EOF marker
            self._changed.notify_all()

    def _read_stdout(self) -> None:
        self._stdout = self.proc.stdout.read()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self._stderr)

    def wait_for(self, pattern: str, timeout: float = 120) -> bool:
        """Block until a stderr line matches ``pattern`` (True), or the process ends / time runs out."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._stderr[seen:]:
                    if line == "":
                        return False
                    if regex.search(line):
                        return True
                seen = len(self._stderr)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)

    def time_of(self, pattern: str) -> float | None:
        """When the first stderr line matching ``pattern`` arrived (time.monotonic), or None."""
        regex = re.compile(pattern)
        with self._changed:
            return next((t for line, t in zip(self._stderr, self._times) if regex.search(line)), None)

    def finish(self, timeout: float = 300) -> Run:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.join(10)
        self.wait_for(r"(?!)", timeout=10)  # until EOF
        return Run(self.proc.returncode, self._stdout, self.stderr, time.monotonic() - self.started)


@dataclass
class Workspace:
    """A private params.yaml and work dir: the flows edit params.yaml (excluded classes), so no test
    shares the repository's."""

    root: Path
    work: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @classmethod
    def create(cls, root: Path, params_text: str, work: Path | None = None) -> Workspace:
        root.mkdir(parents=True, exist_ok=True)
        (root / "params.yaml").write_text(params_text)
        return cls(root, work or root / "work")

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "LAU_PARAMS": str(self.params), "LAU_WORK_DIR": str(self.work),
               "PYTHONUNBUFFERED": "1"}
        env.pop("LAU_FAULT", None)  # faults are injected by the test that means them, never inherited
        return {**env, **extra}

    def lau(self, *args: str, model: str | None = None, timeout: float = 300, env: dict | None = None,
            **extra: str) -> Run:
        argv = [LAU, *args, *(["--model", model] if model else [])]
        start = time.monotonic()
        try:
            done = warm_lau.run(argv, timeout=timeout, cwd=REPO, env=env or self.env(**extra))
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"`lau {' '.join(args)}` still running after {timeout} s:\n"
                                 f"{(err.stderr or b'')[-3000:]!r}") from None
        return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - start)

    def start(self, *args: str, model: str, **extra: str) -> Live:
        return Live([LAU, *args, "--model", model], self.env(**extra))


def params_text(**sections: dict[str, Any]) -> str:
    """The repository's params.yaml with some keys changed, e.g. ``train={"epochs": 4}``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    return yaml.safe_dump(params, sort_keys=False)


# ---------------------------------------------------------------- the registry and the ledger


def mlflow_client():  # noqa: ANN201 - mlflow.MlflowClient
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def s3_client():  # noqa: ANN201 - a boto3 S3 client
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=os.environ["LAU_S3_ENDPOINT"], region_name="us-east-1",
                        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def bucket() -> str:
    return os.environ.get("LAU_BUCKET", "lau")


def versions(model: str) -> list[Any]:
    found = mlflow_client().search_model_versions(f"name = '{model}'", max_results=1000)
    return sorted(found, key=lambda v: int(v.version))


def champion(model: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client().get_model_version_by_alias(model, "champion")
    except MlflowException:
        return None


def ledger_objects(model: str) -> dict[str, bytes]:
    """Every ledger object of a model, raw: key -> bytes."""
    client, out = s3_client(), {}
    listed = client.list_objects_v2(Bucket=bucket(), Prefix=f"requests/{model}/")
    for item in listed.get("Contents", []):
        out[item["Key"]] = client.get_object(Bucket=bucket(), Key=item["Key"])["Body"].read()
    return out


def ledger(model: str) -> dict[str, dict]:
    """request id -> record; every object must be a complete JSON record (asserted)."""
    from tasks.ledger import Request

    records = {}
    for key, raw in ledger_objects(model).items():
        record = json.loads(raw)  # a half-written object would not parse
        missing = set(Request.__dataclass_fields__) - set(record)
        assert not missing, f"{key}: record lacks {sorted(missing)}"
        assert record["status"] in STATUSES, f"{key}: status {record['status']!r}"
        assert key.endswith(f"/{record['request_id']}.json"), key
        records[record["request_id"]] = record
    return records


def snapshot(model: str) -> dict[str, Any]:
    """What bad input must leave untouched: versions with their tags, the champion, the ledger."""
    current = champion(model)
    return {"versions": [(v.version, sorted((v.tags or {}).items())) for v in versions(model)],
            "champion": current.version if current else None,
            "ledger": ledger_objects(model)}


def forgotten(version: Any) -> set[int]:
    return set(json.loads((version.tags or {}).get("lau.forgotten_classes", "[]")))


def check_invariants(model: str, promised: dict[str, list[int]], *, settled: bool = True) -> dict[str, dict]:
    """The product's invariants (docs/design.md) after faults. ``promised``: request id -> classes of the requests that
    must have been processed (registered). With ``settled``, no request may still be retryable.

    - every ledger record parses, is complete, has a valid status;
    - each request produced exactly one version, and its record names that version;
    - no version lacks `lau.gate=passed` or `lau.weights_sha256`; no version is claimed by two requests;
    - the champion passed the gate and has forgotten every promised class (cumulative lineage),
      and the lineage from it back to the original holds every registered version;
    - the erasure record holds every promised class, each entry naming a registered request.
    """
    records = ledger(model)
    all_versions = versions(model)
    by_request: dict[str, list[str]] = {}
    for v in all_versions:
        tags = v.tags or {}
        assert tags.get("lau.gate") == "passed", f"version {v.version} lacks lau.gate=passed: {tags}"
        assert tags.get("lau.weights_sha256"), f"version {v.version} lacks lau.weights_sha256"
        for request_id in filter(None, tags.get("lau.request_ids", "").split(",")):
            by_request.setdefault(request_id, []).append(v.version)
    for request_id, classes in promised.items():
        record = records.get(request_id)
        assert record is not None, f"{request_id} is missing from the ledger"
        assert record["status"] == "registered", f"{request_id}: {record['status']} ({record.get('error')})"
        produced = by_request.get(request_id, [])
        assert produced == [record["version"]], f"{request_id}: versions {produced}, ledger {record['version']}"
        assert set(classes) <= set(record["forgotten_classes"]), record
    for request_id, produced in by_request.items():
        assert request_id in records, f"version(s) {produced} name request {request_id}, unknown to the ledger"
    if settled:
        stuck = {r: rec["status"] for r, rec in records.items() if rec["status"] in RETRYABLE}
        assert not stuck, f"requests still to do: {stuck}"
    current = champion(model)
    assert current is not None, f"{model} has no champion"
    assert (current.tags or {}).get("lau.gate") == "passed"
    need = set().union(*promised.values()) if promised else set()
    assert need <= forgotten(current), f"champion v{current.version} forgot {forgotten(current)}, promised {need}"
    lineage, version = [], current
    by_number = {v.version: v for v in all_versions}
    while version is not None:
        lineage.append(version.version)
        version = by_number.get((version.tags or {}).get("lau.parent_version", ""))
    registered = {rec["version"] for rec in records.values() if rec["status"] == "registered"}
    assert registered <= set(lineage), f"registered versions {registered} off the champion's lineage {lineage}"
    erased = erasures(model)
    assert need <= set(erased), f"erasure record {sorted(erased)} lacks promised classes {sorted(need - set(erased))}"
    for klass, entry in erased.items():
        assert records.get(entry["request_id"], {}).get("status") == "registered", (klass, entry)
    return records


def erasures(model: str) -> dict[int, dict]:
    """The model's erasure record on S3: class id -> its entry."""
    client, found = s3_client(), {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket(), Prefix=f"erasures/{model}/"):
        for item in page.get("Contents", []):
            entry = json.loads(client.get_object(Bucket=bucket(), Key=item["Key"])["Body"].read())
            found[int(entry["class_id"])] = entry
    return found


def artifact_key(run_id: str, path: str) -> str:
    """The S3 key of a run's artifact: the MLflow server keeps them under s3://<bucket>/mlflow/."""
    uri = mlflow_client().get_run(run_id).info.artifact_uri  # mlflow-artifacts:/<experiment>/<run>/artifacts
    return f"mlflow/{uri.split('mlflow-artifacts:', 1)[1].strip('/')}/{path}"


def clone_model(source: str, target: str) -> None:
    """Register ``source``'s champion under a new name as version 1, with its own copy of the engine
    checkpoint (a new MLflow run), so that tests can break one model without touching another."""
    client = mlflow_client()
    original = client.get_model_version_by_alias(source, "champion")
    experiment = client.get_experiment_by_name(f"lau/{target}")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(f"lau/{target}")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = client.download_artifacts(original.run_id, "checkpoint", tmp)
        run = client.create_run(experiment_id, run_name=f"copy of {source} v{original.version}")
        client.log_artifacts(run.info.run_id, checkpoint, "checkpoint")
        client.log_artifact(run.info.run_id, client.download_artifacts(original.run_id, "evaluation.json", tmp))
        client.set_terminated(run.info.run_id)
    client.create_registered_model(target)
    copy = client.create_model_version(target, original.source, run_id=run.info.run_id, tags=original.tags,
                                       model_id=original.source.removeprefix("models:/"))
    client.set_registered_model_alias(target, "champion", copy.version)


# ---------------------------------------------------------------- the stack's services


def stack_dir() -> Path:
    configured = Path(os.environ.get("LAU_STACK_DIR", ".stack"))
    return configured if configured.is_absolute() else REPO / configured


def service_pid(name: str) -> int | None:
    from infra import procs

    return procs.running_pid(stack_dir() / "pids" / f"{name}.pid")


def kill_service(name: str) -> None:
    """SIGKILL a service of the stack (s3 or mlflow) with every process of its session."""
    from infra import procs

    pid = service_pid(name)
    assert pid is not None, f"{name} is not running"
    procs.signal_until_gone(pid, signal.SIGKILL, 10)
    assert service_pid(name) is None


def restore_stack() -> None:
    """`python -m infra.stack up`: restarts what is down and waits until every service is healthy."""
    done = subprocess.run([sys.executable, "-m", "infra.stack", "up"], cwd=REPO, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"the stack did not come back: {done.stderr[-2000:]}"
    # A restarted SeaweedFS answers its health check a moment before it serves objects again.
    client, key, deadline = s3_client(), f"tests/reliability/probe-{uuid.uuid4().hex}", time.monotonic() + 60
    while True:
        try:
            client.put_object(Bucket=bucket(), Key=key, Body=b"probe")
            assert client.get_object(Bucket=bucket(), Key=key)["Body"].read() == b"probe"
            client.delete_object(Bucket=bucket(), Key=key)
            return
        except Exception:  # noqa: BLE001 - not serving yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextmanager
def outage(name: str) -> Iterator[None]:
    """Inside the block the service is down; after it, up again whatever happened."""
    kill_service(name)
    try:
        yield
    finally:
        restore_stack()


@dataclass
class Timer:
    marks: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> float:
        self.marks[name] = round(time.monotonic() - self.start, 1)
        return self.marks[name]
