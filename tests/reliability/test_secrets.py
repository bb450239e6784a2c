"""Secrets and exposure: the stack's credentials (S3 keys of the pipeline and the viewer, MLflow's
passwords, Prefect's auth string, MLflow's CSRF key) appear in no git-tracked file, no log, no
service database and no `lau` output or artifact; the files that hold them are private and
git-ignored; S3 refuses requests without keys.

Network exposure is tested in tests/integration/test_stack.py (every listening socket of the stack
is on loopback, nothing answers on other addresses; S3 rejects wrong keys); not repeated here.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from reliability_harness import REPO, bucket, needs_stack, stack_dir

pytestmark = [needs_stack, pytest.mark.reliability]

AWS_LIKE = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # an AWS access key id
    re.compile(r"(?i)(secret_access_key|secret_key|aws_secret)\s*[:=]\s*[\"'][A-Za-z0-9/+=_-]{16,}[\"']"),
    re.compile(r"\blau[0-9a-f]{16}\b"),  # an access key that `make up` generates
]
# The files that hold them, by design (mode 600, git-ignored); the object store's own data is skipped.
HOLDERS = ("credentials", "env", "s3-identities.json")


def credentials() -> dict[str, str]:
    """Every secret of the stack (key ids too), by name: .stack/credentials, and the environment's keys."""
    from dataclasses import asdict

    from infra import stack

    found = {name: value for name, value in asdict(stack.load_config(os.environ).creds).items() if value}
    found.update({v: os.environ[v] for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if os.environ.get(v)})
    assert len(found) >= 9, "no stack credentials to look for"
    return found


def leaks(text: str) -> list[str]:
    """The names of the secrets that the text holds (never the values)."""
    return [name for name, secret in credentials().items() if secret in text]


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name and (REPO / name).is_file()]


def test_no_credential_in_a_tracked_file() -> None:
    found = []
    for path in tracked_files():
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [f"{path.relative_to(REPO)}: the stack's secret {leak}" for leak in leaks(text)]
        found += [f"{path.relative_to(REPO)}: {m.group(0)[:40]}" for p in AWS_LIKE for m in p.finditer(text)]
    assert not found, "\n".join(found)


def test_the_files_holding_credentials_are_private_and_ignored() -> None:
    for name in HOLDERS:
        path = stack_dir() / name
        assert path.exists(), f"{path} is missing: run `make up`"
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"
        if REPO in path.parents:
            ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO)
            assert ignored.returncode == 0, f"{path} is not git-ignored"


def test_no_credential_in_the_logs_or_the_stack_state() -> None:
    """The services' logs and configuration, the MLflow, MLflow-auth and Prefect databases (runs,
    params, flow-run parameters, users: hashed passwords only)."""
    folder = stack_dir()
    found = []
    for path in [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]:
        if path.name in HOLDERS or "s3" in path.relative_to(folder).parts[:1]:
            continue  # the credentials themselves; the object store's own data
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [f"{path}: the stack's secret {leak}" for leak in leaks(text)]
    assert not found, "\n".join(found)


@pytest.mark.slow  # needs the session's trained model (conftest.reference)
def test_no_credential_in_what_lau_prints(reference) -> None:  # noqa: ANN001
    """The whole output of `lau train` (MLflow, Prefect and our own logs included)."""
    assert not leaks(reference.train_run.stdout + reference.train_run.stderr)


@pytest.mark.slow  # needs the session's trained model (conftest.reference)
def test_no_credential_in_what_the_pipeline_stores(reference) -> None:  # noqa: ANN001
    """The reference model's MLflow run (params, tags), its version's tags and its artifacts' text
    files."""
    from reliability_harness import champion, mlflow_client

    client = mlflow_client()
    version = champion(reference.model)
    run = client.get_run(version.run_id)
    stored = json.dumps({"params": run.data.params, "tags": run.data.tags, "version": version.tags})
    for name in ("params.yaml", "evaluation.json", "checkpoint/config.json"):
        stored += Path(client.download_artifacts(run.info.run_id, name, str(reference.workspace.root))).read_text()
    assert not leaks(stored)


def test_s3_refuses_requests_without_keys() -> None:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    anonymous = boto3.client("s3", endpoint_url=os.environ["LAU_S3_ENDPOINT"], region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}))
    for call in (lambda: anonymous.list_objects_v2(Bucket=bucket(), Prefix="requests/"),
                 lambda: anonymous.put_object(Bucket=bucket(), Key="requests/anonymous.json", Body=b"{}")):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] in {"AccessDenied", "403", "InvalidAccessKeyId"}
