"""`python -m infra.stack.provision MLFLOW_URL`: MLflow's pipeline and viewer accounts on a team's
server (infra/production: the Kubernetes Job and the compose service mlflow-accounts), with the code
that `make up` uses (infra/stack/accounts.py). Not imported by infra.stack: `python -m` runs it."""

from __future__ import annotations

import os
import sys

from infra.stack.accounts import provision
from infra.stack.config import StackError
from infra.stack.health import NotHealthy


def main() -> int:
    """`python -m infra.stack.provision URL`: the same accounts on a team's MLflow (the Kubernetes Job
    mlflow-accounts, infra/production), passwords from MLFLOW_AUTH_ADMIN_PASSWORD,
    MLFLOW_PIPELINE_PASSWORD and MLFLOW_VIEWER_PASSWORD."""
    names = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_VIEWER_PASSWORD")
    missing = [n for n in names if not os.environ.get(n)]
    if len(sys.argv) != 2 or missing:
        print(f"usage: python -m infra.stack.provision MLFLOW_URL (with {', '.join(missing or names)} set)",
              file=sys.stderr)
        return 2
    try:
        provision(sys.argv[1].rstrip("/"), *(os.environ[n] for n in names))
    except (StackError, NotHealthy) as error:
        print(f"lau accounts: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
