"""Secrets and exposure: the stack's credentials appear in no git-tracked file, no log and no `lau`
output; the files that hold them are private; S3 refuses requests without keys.

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
# SeaweedFS logs, once at start, the access key *id* of the identity it created (never the secret).
KEY_ID_ALLOWED_IN = re.compile(r"Added admin identity from AWS environment variables")


def credentials() -> dict[str, str]:
    """The stack's access key id and secret: from the environment, else .stack/credentials."""
    found = {"key_id": os.environ.get("AWS_ACCESS_KEY_ID", ""), "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", "")}
    stored = stack_dir() / "credentials"
    if stored.exists():
        data = json.loads(stored.read_text())
        found = {"key_id": found["key_id"] or data["access_key"], "secret": found["secret"] or data["secret_key"]}
    assert found["key_id"] and found["secret"], "no stack credentials to look for"
    return found


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name and (REPO / name).is_file()]


def test_no_credential_in_a_tracked_file() -> None:
    creds = credentials()
    found = []
    for path in tracked_files():
        text = path.read_bytes().decode("utf-8", errors="replace")
        if creds["secret"] in text or creds["key_id"] in text:
            found.append(f"{path.relative_to(REPO)}: the stack's credentials")
        found += [f"{path.relative_to(REPO)}: {m.group(0)[:40]}" for p in AWS_LIKE for m in p.finditer(text)]
    assert not found, "\n".join(found)


def test_the_files_holding_credentials_are_private_and_ignored() -> None:
    for name in ("credentials", "env"):
        path = stack_dir() / name
        if not path.exists():
            continue
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"
        if REPO in path.parents:
            ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO)
            assert ignored.returncode == 0, f"{path} is not git-ignored"


def test_no_credential_in_the_logs_or_the_stack_state() -> None:
    """The services' logs, and the MLflow and Prefect databases (runs, params, flow-run parameters)."""
    creds = credentials()
    folder = stack_dir()
    found = []
    for path in [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]:
        if path.name in ("credentials", "env") or "s3" in path.relative_to(folder).parts[:1]:
            continue  # the credentials themselves; the object store's own data
        data = path.read_bytes()
        if creds["secret"].encode() in data:
            found.append(f"{path}: the secret key")
        for line in data.decode("utf-8", errors="replace").splitlines():
            if creds["key_id"] in line and not KEY_ID_ALLOWED_IN.search(line):
                found.append(f"{path}: the access key id: {line[:160]}")
                break
    assert not found, "\n".join(found)


@pytest.mark.slow  # needs the session's trained model (conftest.reference)
def test_no_credential_in_what_lau_prints(reference) -> None:  # noqa: ANN001
    """The whole output of `lau train` (MLflow, Prefect and our own logs included)."""
    creds = credentials()
    output = reference.train_run.stdout + reference.train_run.stderr
    assert creds["secret"] not in output and creds["key_id"] not in output


@pytest.mark.slow  # needs the session's trained model (conftest.reference)
def test_no_credential_in_what_the_pipeline_stores(reference) -> None:  # noqa: ANN001
    """The reference model's MLflow run (params, tags) and its artifacts' text files."""
    from reliability_harness import champion, mlflow_client

    creds = credentials()
    client = mlflow_client()
    run = client.get_run(champion(reference.model).run_id)
    stored = json.dumps({"params": run.data.params, "tags": run.data.tags})
    for name in ("params.yaml", "evaluation.json", "checkpoint/config.json"):
        stored += Path(client.download_artifacts(run.info.run_id, name, str(reference.workspace.root))).read_text()
    assert creds["secret"] not in stored and creds["key_id"] not in stored


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
