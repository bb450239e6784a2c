"""Deployments of one model: the scheduled pass over pending requests (params.yaml's cron), the
on-demand deletion, and the weekly consolidation (a retrain on the cleaned data); and the warm
worker of `lau serve`, which processes a new request as soon as it is filed, in its own process.

Prefect runs each deployment's flow run in a freshly spawned process: it imports torch, MLflow and
Prefect again and reads the model and its features from disk, seconds before any unlearning starts.
A deletion request should not wait for that, nor for the nightly schedule: the warm worker polls
the ledger (one S3 LIST per poll, tasks/ledger.py) and runs the `process pending deletions` flow
in this process, where everything stays loaded.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from prefect import serve
from prefect.context import SyncClientContext
from prefect.schedules import Cron

from flows.deletion import deletion, process_pending
from flows.train import consolidate
from lau.utils import progress
from tasks.context import Context
from tasks.ledger import RequestStatus


def deployments(ctx: Context, cron: str | None = None, interval: float | None = None) -> list:
    """`process-pending-<model>` on its schedule, `deletion-<model>` on demand, `consolidate-<model>`
    on ``schedule.consolidate_cron``."""
    schedule = ctx.params.schedule
    params = {"model_name": ctx.model_name, "params_path": str(ctx.settings.params_path)}
    timing: dict[str, Any] = ({"interval": timedelta(seconds=interval)} if interval
                              else {"schedule": Cron(cron or schedule.cron, timezone=schedule.timezone)})
    return [
        process_pending.to_deployment(name=f"process-pending-{ctx.model_name}", parameters=params,
                                      description="Process every pending deletion request of the model.",
                                      tags=["lau", "scheduled"], **timing),
        deletion.to_deployment(name=f"deletion-{ctx.model_name}", parameters=params,
                               description="Process one deletion request now (pass request_id).",
                               tags=["lau", "on-demand"]),
        consolidate.to_deployment(name=f"consolidate-{ctx.model_name}", parameters=params,
                                  description="Retrain on the cleaned data, gate, promote: the features forget too.",
                                  tags=["lau", "scheduled"],
                                  schedule=Cron(schedule.consolidate_cron, timezone=schedule.timezone)),
    ]


def serve_deployments(ctx: Context, cron: str | None = None, interval: float | None = None,
                      poll_s: float | None = 0.2) -> None:
    """Serve the deployments until interrupted, and (unless ``poll_s`` is None) the warm worker."""
    stop = threading.Event()
    if poll_s is not None:
        threading.Thread(target=warm_worker, args=(ctx, poll_s, stop), name="lau-warm-worker", daemon=True).start()
    try:
        serve(*deployments(ctx, cron, interval))
    finally:
        stop.set()


def warm_worker(ctx: Context, poll_s: float, stop: threading.Event) -> None:
    """Every ``poll_s`` seconds: if the model has a pending request, one pass of `process pending
    deletions` in this process (under the model's lock, like every other pass). A pass that fails
    is logged and retried at the next request; the nightly deployment retries failed requests."""
    progress(f"[serve] warm worker for '{ctx.model_name}': polling its ledger every {poll_s:g} s")
    params_path = str(ctx.settings.params_path)
    # One Prefect client for every pass: each flow run would otherwise open its own (~0.1 s).
    with SyncClientContext.get_or_create():
        while not stop.wait(poll_s):
            try:
                if any(r.status == RequestStatus.PENDING for r in ctx.ledger.retryable(ctx.model_name)):
                    process_pending(model_name=ctx.model_name, params_path=params_path)
            except Exception as err:  # noqa: BLE001 - the worker outlives any one pass
                progress(f"[serve] warm pass failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
