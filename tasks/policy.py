"""How orchestration steps behave under failure: the retry policy of I/O tasks and fault injection."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from prefect.cache_policies import NO_CACHE

from tasks.settings import InfraError


def retry_on_infra(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed I/O task only when a service failed, never on bad input or math."""
    try:
        state.result()
    except InfraError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final
        return False
    return False


def fault_point(name: str, request_id: str | None = None) -> None:
    """Fault injection for tests/reliability, read from the environment only. ``LAU_FAULT=<name>``:
    the process SIGKILLs itself here, as an OOM kill or a lost node would (no cleanup, no lock
    release). ``LAU_FAULT=<name>:error``: an InfraError is raised here, as a dropped connection would;
    ``LAU_FAULT=<name>:crash``: a RuntimeError, as a bug would; ``LAU_FAULT=<name>:pause``: the flow
    waits there until the file ``LAU_FAULT_RESUME`` exists (at most 300 s), so that a test can
    break a service at that exact step. Points: features, unlearn, register
    (MLflow run logged, no version yet), version (version just created, its response not yet
    returned), registered (not promoted), served (promoted, its run's audit part and the erasure
    record not yet written), promoted (promoted and reported, ledger not yet updated).
    ``LAU_FAULT_REQUEST=<id>`` limits the fault to that request. Unset: no effect."""
    point, _, mode = os.environ.get("LAU_FAULT", "").partition(":")
    only = os.environ.get("LAU_FAULT_REQUEST")
    if point != name or (only and request_id is not None and only != request_id):
        return
    if mode == "error":
        raise InfraError(f"injected fault at '{name}' (LAU_FAULT)")
    if mode == "crash":
        raise RuntimeError(f"injected crash at '{name}' (LAU_FAULT)")
    if mode == "pause":
        resume, deadline = os.environ.get("LAU_FAULT_RESUME", ""), time.monotonic() + 300
        print(f"[fault] LAU_FAULT={name}: paused until {resume} exists", file=sys.stderr, flush=True)
        while resume and not os.path.exists(resume) and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    print(f"[fault] LAU_FAULT={name}: SIGKILL", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


# Tasks that talk to S3 or MLflow: three retries over ~30 s ride out a short outage (an MLflow
# server restart takes ~20 s). The only retry layer for MLflow calls (see tasks/registry.py).
IO = {"retries": 3, "retry_delay_seconds": [2, 10, 20], "retry_condition_fn": retry_on_infra,
      "cache_policy": NO_CACHE}
# Tasks that compute: no retries (a deterministic failure would fail again), no caching.
MATH = {"cache_policy": NO_CACHE}
