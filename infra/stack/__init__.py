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
    LAU_STACK_ACCESS_KEY_ID / LAU_STACK_SECRET_ACCESS_KEY (the pipeline's S3 keys; else generated
    once into .stack/credentials; AWS_* in the shell are never used: they may be someone's real keys),
    LAU_WORKER (1: also start `prefect worker start --type process` on the pool LAU_WORK_POOL,
    default "lau-process", that prefect.yaml's deployments use; `down` stops it whatever LAU_WORKER says).

Every service asks for credentials (infra/stack/credentials.py): S3 its keys, MLflow its basic-auth
accounts (the pipeline's, a read-only viewer's, the admin's; infra/stack/accounts.py, and on a team
server `python -m infra.stack.provision`), Prefect its auth string. ``.stack/env`` exports the pipeline's, and the viewer's as LAU_VIEWER_*.

Modules: config (settings), credentials, services (command lines, environments), health,
accounts (MLflow's users and grants), commands (up, down, status, env).

Errors are one line on stderr and a non-zero exit; progress goes to stderr, addresses to stdout.
"""

from infra.stack.commands import (
    cmd_down,
    cmd_status,
    cmd_up,
    env_lines,
    launch,
    main,
    running_pid,
    stop,
    wait_healthy,
    write_env_file,
)
from infra.stack.config import HOST, REGION, Config, Ports, StackError, load_config
from infra.stack.credentials import MLFLOW_ADMIN, PIPELINE_USER, VIEWER_USER, Credentials, load_credentials
from infra.stack.health import CredentialsRejected, NotHealthy, check_health
from infra.stack.services import Service, command, env_values, service_env, services

__all__ = [
    "HOST", "MLFLOW_ADMIN", "PIPELINE_USER", "REGION", "VIEWER_USER", "Config", "Credentials",
    "CredentialsRejected", "NotHealthy", "Ports", "Service", "StackError", "check_health", "cmd_down",
    "cmd_status", "cmd_up", "command", "env_lines", "env_values", "launch", "load_config", "load_credentials",
    "main", "running_pid", "service_env", "services", "stop", "wait_healthy", "write_env_file",
]
