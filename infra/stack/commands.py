"""up, down, status and env: starting, stopping and watching the services."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping

from infra import procs
from infra.stack.accounts import ensure_accounts
from infra.stack.config import (
    DEFAULT_WORK_POOL,
    HOST,
    Config,
    StackError,
    display_path,
    find_weed,
    load_config,
    progress,
)
from infra.stack.credentials import write_private
from infra.stack.health import CredentialsRejected, NotHealthy, check_health
from infra.stack.services import Service, command, env_values, service_env, services, write_config_files

STOP_GRACE_S = 15.0
STACK_DIRS = ("logs", "logs/weed", "pids", "run", "s3", "mlflow", "prefect", "worker")


def running_pid(service: Service, cfg: Config) -> int | None:
    """The pid of our running service, or None."""
    return procs.running_pid(service.pid_file(cfg))


def launch(service: Service, cfg: Config, environ: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a service in its own session, logging to its log file; record its pid."""
    for sub in STACK_DIRS:
        (cfg.stack_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    write_config_files(service, cfg)
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
            if proc is None:  # it was running before: started by an older version or with other keys
                raise StackError(f"{error}: it was started by an older version or with other "
                                 "credentials; run `make down` then `make up`") from None
            if service.name != "s3":  # S3 may refuse while it loads its identities; the others never
                raise StackError(f"{error}; see {log}") from None
            last = str(error)
        except NotHealthy as error:
            last = str(error)
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{service.title} exited during start-up (code {proc.returncode}); see {log}")
        if time.monotonic() - since > cfg.timeout_s:
            raise StackError(f"{service.title} not healthy after {cfg.timeout_s:g} s ({last}); see {log}")
        time.sleep(0.25)


def cmd_up(cfg: Config, environ: Mapping[str, str]) -> None:
    """Start what is not running (nothing at all if a port is taken), wait until all are healthy,
    make sure MLflow's accounts exist, write .stack/env."""
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
    print(f"Dashboard {cfg.url('dashboard')}  (/metrics for Prometheus)")
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
    """S3 and Prefect boot side by side, MLflow once S3 answers (then its accounts are made), the
    worker once Prefect answers. On failure, stop what we started."""
    s3, mlflow, prefect, dashboard, *worker = all_services
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
        ensure_accounts(cfg)
        wait(prefect)
        start(dashboard)  # reads S3 and MLflow with the viewer's accounts, made just above
        wait(dashboard)
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


def write_env_file(cfg: Config) -> None:
    path = cfg.stack_dir / "env"
    write_private(path, f"# Written by `python -m infra.stack up`; use: source {display_path(path)}\n"
                        + "\n".join(env_lines(cfg)) + "\n")


@contextlib.contextmanager
def stack_lock(cfg: Config) -> Iterator[None]:
    """One up/down at a time per stack directory."""
    cfg.stack_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (cfg.stack_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description="The local service stack.")
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
