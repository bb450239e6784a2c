"""What runs: each service's command line, environment and configuration files."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from infra.stack.config import (
    DEFAULT_WORK_POOL,
    GRPC_OFFSET,
    HOST,
    PORT_SETTINGS,
    REGION,
    REPO_ROOT,
    WEED_FIELDS,
    Config,
    find_weed,
)
from infra.stack.credentials import MLFLOW_ADMIN, PIPELINE_USER, VIEWER_USER, write_private

# One uvicorn process: with --workers N uvicorn drops TCP_NODELAY and every keep-alive call waits
# ~44 ms on a delayed ACK (uvicorn issue #3149; measured 44 ms vs 1.5 ms per /health call here).
MLFLOW_WORKERS = 1
WORKER_NAME = "lau-stack-worker"
NO_TELEMETRY = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"  # survives a server restart
# A dead holder's model lock (a 60 s lease) frees within LEASE_S + REPOSSESS_S + 1.3 * SLOT_RETRY_S:
# the server revokes expired leases every REPOSSESS_S (Prefect's default 15) and a waiting flow asks
# again after at most SLOT_RETRY_S (+30 % jitter; Prefect's default 30, meant for long task slots; a
# model's lock is held for seconds). Defaults measured a 106 s wait after a SIGKILL under load.
REPOSSESS_S = 5
SLOT_RETRY_S = 5
# MLflow's basic-auth: a user sees nothing unless granted (infra/stack/accounts.py grants the
# pipeline MANAGE and the viewer READ on every experiment and registered model).
MLFLOW_DEFAULT_PERMISSION = "NO_PERMISSIONS"
MLFLOW_AUTH_CACHE_S = 600


class PortSpec(NamedTuple):
    port: int
    label: str  # e.g. "MLflow", "S3 master gRPC"
    env_var: str  # the setting that moves it


@dataclass(frozen=True)
class Service:
    name: str  # stem of its pid and log files: s3, mlflow, prefect
    title: str
    ports: tuple[PortSpec, ...]  # the first one is the public port

    def pid_file(self, cfg: Config) -> Path:
        return cfg.stack_dir / "pids" / f"{self.name}.pid"

    def log_file(self, cfg: Config) -> Path:
        return cfg.stack_dir / "logs" / f"{self.name}.log"


def services(cfg: Config, *, every_kind: bool = False) -> list[Service]:
    """The services in start order (MLflow stores its artifacts on S3, the dashboard reads S3 and
    MLflow, the worker needs Prefect): S3, MLflow, Prefect, the ops dashboard, and the worker when
    asked for (or ``every_kind``, to stop it)."""

    def spec(field: str, grpc: bool = False) -> PortSpec:
        env_var, _, label = PORT_SETTINGS[field]
        port = getattr(cfg.ports, field)
        return (
            PortSpec(port + GRPC_OFFSET, label + " gRPC", env_var) if grpc else PortSpec(port, label, env_var)
        )

    s3_ports = tuple(spec(f) for f in WEED_FIELDS) + tuple(spec(f, grpc=True) for f in WEED_FIELDS)
    return [
        Service("s3", "S3", s3_ports),
        Service("mlflow", "MLflow", (spec("mlflow"),)),
        Service("prefect", "Prefect", (spec("prefect"),)),
        Service("dashboard", "Dashboard", (spec("dashboard"),)),
        *([Service("worker", "Worker", ())] if cfg.work_pool or every_kind else []),
    ]


def command(service: Service, cfg: Config, environ: Mapping[str, str]) -> list[str]:
    """The command line that runs a service in the foreground."""
    if service.name == "s3":
        return weed_command(cfg, find_weed(environ))
    if service.name == "mlflow":
        return mlflow_command(cfg)
    if service.name == "worker":
        return worker_command(cfg)
    if service.name == "dashboard":  # read-only: it uses the viewer's accounts (dashboard/settings.py)
        params = environ.get("LAU_PARAMS") or str(REPO_ROOT / "params.yaml")
        return [sys.executable, "-m", "dashboard", "--host", HOST, "--port", str(cfg.ports.dashboard),
                "--params", params]
    return [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(cfg.ports.prefect)]


def weed_command(cfg: Config, weed: str) -> list[str]:
    """`weed mini`: master, volume server, filer, S3 gateway and admin server in one process, every
    port pinned (gRPC = HTTP + 10000), WebDAV, Iceberg, Lance, admin UI and telemetry off; its S3
    identities from the private file that write_config_files writes."""
    p, d = cfg.ports, cfg.stack_dir
    http = {"s3": p.s3, "master": p.weed_master, "volume": p.weed_volume, "filer": p.weed_filer}
    http["admin"] = p.weed_admin  # the admin server listens even with its UI off
    ports = [f"-{c}.port={n}" for c, n in http.items()]
    ports += [f"-{c}.port.grpc={n + GRPC_OFFSET}" for c, n in http.items()]
    off = [
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    sockets = [f"-filer.localSocket={d / 'run' / 'filer.sock'}", f"-s3.localSocket={d / 'run' / 's3.sock'}"]
    where = [f"-dir={d / 's3'}", f"-ip={HOST}", f"-ip.bind={HOST}", f"-bucket={cfg.bucket}"]
    identities = f"-s3.config={s3_identities_file(cfg)}"
    logs = f"-logdir={d / 'logs' / 'weed'}"  # its detailed logs; the summary goes to s3.log
    return [weed, logs, "mini", *where, *off, *sockets, identities, *ports]


def mlflow_command(cfg: Config) -> list[str]:
    """The MLflow server behind its basic-auth app: runs and registry in SQLite, users and
    permissions in a second SQLite database beside it, artifacts proxied to s3://BUCKET/mlflow."""
    listen = ["--host", HOST, "--port", str(cfg.ports.mlflow), "--workers", str(MLFLOW_WORKERS)]
    store = ["--backend-store-uri", f"sqlite:///{cfg.stack_dir / 'mlflow' / 'mlflow.db'}"]
    artifacts = ["--artifacts-destination", f"s3://{cfg.bucket}/mlflow"]
    return [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", *listen, *store, *artifacts]


def worker_command(cfg: Config) -> list[str]:
    """A Prefect process worker: it polls the pool and runs each flow run in a subprocess."""
    pool = cfg.work_pool or DEFAULT_WORK_POOL
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
            "--name", WORKER_NAME]


def mlflow_auth_file(cfg: Config) -> Path:
    return cfg.stack_dir / "mlflow" / "basic_auth.ini"


def mlflow_auth_db(cfg: Config) -> Path:
    return cfg.stack_dir / "mlflow" / "basic_auth.db"


def s3_identities_file(cfg: Config) -> Path:
    return cfg.stack_dir / "s3-identities.json"


def write_config_files(service: Service, cfg: Config) -> None:
    """The files a service reads at start: SeaweedFS's identities (secret: mode 600), MLflow's
    auth configuration (no secret in it: the admin's password travels in its environment)."""
    if service.name == "s3":
        c = cfg.creds
        identities = [
            {"name": PIPELINE_USER, "credentials": [{"accessKey": c.access_key, "secretKey": c.secret_key}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": VIEWER_USER,
             "credentials": [{"accessKey": c.viewer_access_key, "secretKey": c.viewer_secret_key}],
             "actions": [f"Read:{cfg.bucket}", f"List:{cfg.bucket}"]},
        ]
        write_private(s3_identities_file(cfg), json.dumps({"identities": identities}, indent=1) + "\n")
    if service.name == "mlflow":
        mlflow_auth_file(cfg).write_text(
            "# Written by `python -m infra.stack up` at each start of MLflow.\n[mlflow]\n"
            f"default_permission = {MLFLOW_DEFAULT_PERMISSION}\n"
            f"database_uri = sqlite:///{mlflow_auth_db(cfg)}\n"
            f"admin_username = {MLFLOW_ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # Each password check is a PBKDF2 hash: ~1.2 s per request here without this cache, ~5 ms
            # with it. One server process, so a password change through the API takes effect at once.
            f"auth_cache_ttl_seconds = {MLFLOW_AUTH_CACHE_S}\n")


def service_env(service: Service, cfg: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a service runs with: ours on top of the caller's."""
    env = {**environ, **NO_TELEMETRY, "PYTHONUNBUFFERED": "1", "AWS_DEFAULT_REGION": REGION}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # SeaweedFS would add them as an identity
        env.pop(name, None)
    if service.name == "mlflow":
        env.update(
            AWS_ACCESS_KEY_ID=cfg.access_key,  # its artifact proxy writes to S3 as the pipeline
            AWS_SECRET_ACCESS_KEY=cfg.secret_key,
            MLFLOW_S3_ENDPOINT_URL=cfg.url("s3"),
            MLFLOW_AUTH_CONFIG_PATH=str(mlflow_auth_file(cfg)),
            # Read only when the admin does not exist yet (the first start): MLflow ships no default.
            MLFLOW_AUTH_ADMIN_PASSWORD=cfg.creds.mlflow_admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=cfg.creds.mlflow_flask_secret_key,
            # The job runner (GenAI jobs) forks 7 huey consumers and leaves a dir in /dev/shm.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
    if service.name == "prefect":
        env.update(prefect_server_env(cfg))
    if service.name == "worker":  # its flow runs inherit this: what `source .stack/env` gives a shell
        env.update(env_values(cfg), PREFECT_HOME=str(cfg.stack_dir / "worker"))
    if service.name == "dashboard":
        env.update(env_values(cfg))
    return env


def prefect_server_env(cfg: Config) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(cfg.stack_dir / "prefect"),
        "PREFECT_API_URL": f"{cfg.url('prefect')}/api",
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(cfg.ports.prefect),
        # Basic auth on the API and the UI; /api/health stays open (Prefect's choice).
        "PREFECT_SERVER_API_AUTH_STRING": cfg.creds.prefect_auth_string,
        "PREFECT_API_AUTH_STRING": cfg.creds.prefect_auth_string,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        # Concurrency leases (the model locks) on disk, under PREFECT_HOME/concurrency_leases:
        # Prefect's default keeps them in memory, so a restart while a lock is held would leave
        # its slot taken for good (tests/reliability/test_outages.py).
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": str(REPOSSESS_S),
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": str(SLOT_RETRY_S),
    }


def env_values(cfg: Config) -> dict[str, str]:
    """What a client needs to talk to the stack (.stack/env exports exactly these): the pipeline's
    credentials everywhere, and the viewer's under LAU_VIEWER_* for read-only tools."""
    c = cfg.creds
    return {
        "AWS_ACCESS_KEY_ID": c.access_key,
        "AWS_SECRET_ACCESS_KEY": c.secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "MLFLOW_TRACKING_URI": cfg.url("mlflow"),
        "MLFLOW_TRACKING_USERNAME": PIPELINE_USER,
        "MLFLOW_TRACKING_PASSWORD": c.mlflow_pipeline_password,
        "MLFLOW_S3_ENDPOINT_URL": cfg.url("s3"),
        "AWS_ENDPOINT_URL_S3": cfg.url("s3"),
        "PREFECT_API_URL": f"{cfg.url('prefect')}/api",
        "PREFECT_API_AUTH_STRING": c.prefect_auth_string,
        "LAU_BUCKET": cfg.bucket,
        "LAU_S3_ENDPOINT": cfg.url("s3"),
        "LAU_DASHBOARD_URL": cfg.url("dashboard"),
        "LAU_VIEWER_USERNAME": VIEWER_USER,
        "LAU_VIEWER_PASSWORD": c.mlflow_viewer_password,
        "LAU_VIEWER_AWS_ACCESS_KEY_ID": c.viewer_access_key,
        "LAU_VIEWER_AWS_SECRET_ACCESS_KEY": c.viewer_secret_key,
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
        **NO_TELEMETRY,
    }
