"""The stack's accounts and their generated secrets, kept in LAU_STACK_DIR/credentials (mode 600).

| who                        | S3 (SeaweedFS)              | MLflow (basic-auth)            | Prefect           |
| -------------------------- | --------------------------- | ------------------------------ | ----------------- |
| the pipeline (`lau`, flows) | access_key / secret_key: all | lau-pipeline: MANAGE on models | the auth string   |
| a viewer (dashboard)       | viewer_*: read and list     | lau-viewer: READ               | -                 |
| the operator               | -                           | lau-admin: admin               | the auth string   |

Each secret is generated once, on the first ``up`` that needs it, and never changes after: a stack
made before a field existed gets that field added, the others kept (its S3 keys above all, which
its stored objects' clients hold).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MLFLOW_ADMIN = "lau-admin"
PIPELINE_USER = "lau-pipeline"
VIEWER_USER = "lau-viewer"
PREFECT_USER = "lau"


@dataclass(frozen=True)
class Credentials:
    """Every secret of one local stack ("" when not generated yet)."""

    access_key: str = ""  # S3, the pipeline's identity (all actions)
    secret_key: str = ""
    viewer_access_key: str = ""  # S3, read and list only
    viewer_secret_key: str = ""
    mlflow_admin_password: str = ""
    mlflow_pipeline_password: str = ""
    mlflow_viewer_password: str = ""
    prefect_auth_string: str = ""  # user:password of the Prefect API and UI
    mlflow_flask_secret_key: str = ""  # signs MLflow's CSRF tokens (its sign-up form)

    def secrets(self) -> list[str]:
        """Every secret value (key ids included), for tests that look for leaks."""
        return [value for value in asdict(self).values() if value]

    @property
    def complete(self) -> bool:
        return all(getattr(self, f.name) for f in fields(self))


def generate(field: str) -> str:
    """A fresh value for one field of Credentials."""
    if field.endswith("access_key"):
        return "lau" + secrets.token_hex(8)
    if field == "prefect_auth_string":
        return f"{PREFECT_USER}:{secrets.token_urlsafe(24)}"
    return secrets.token_urlsafe(30)


def load_credentials(environ: Mapping[str, str], stack_dir: Path, *, create: bool) -> Credentials:
    """The stack's credentials from stack_dir/credentials; with ``create``, missing ones are generated
    and written there first. LAU_STACK_ACCESS_KEY_ID / LAU_STACK_SECRET_ACCESS_KEY, when both are set,
    choose the pipeline's S3 keys.

    Never AWS_*: a shell holding real AWS keys would otherwise configure the local S3 with them and
    write them into .stack/env and .stack/credentials. Raises ValueError on an unreadable file.
    """
    path = stack_dir / "credentials"
    stored = read_stored(path)
    if create:
        missing = {f.name: generate(f.name) for f in fields(Credentials) if not stored.get(f.name)}
        if missing:
            stack_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            stored = {**stored, **missing}
            write_private(path, json.dumps(stored, indent=1) + "\n")
    known = {f.name: str(stored.get(f.name) or "") for f in fields(Credentials)}
    key, secret = environ.get("LAU_STACK_ACCESS_KEY_ID"), environ.get("LAU_STACK_SECRET_ACCESS_KEY")
    if key and secret:
        known.update(access_key=key, secret_key=secret)
    return Credentials(**known)


def read_stored(path: Path) -> dict[str, str]:
    """The JSON object in the credentials file; {} when there is none."""
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON ({type(error).__name__}); "
                         "restore it from a backup, or remove the stack directory to start over") from None
    if not isinstance(stored, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return stored


def write_private(path: Path, text: str) -> None:
    """Replace path with text, readable by its owner only at every moment (never half-written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(text)
    os.replace(tmp, path)
