"""Deployments of one model: the scheduled pass over pending requests (params.yaml's cron), the
on-demand deletion, and the weekly consolidation (a retrain on the cleaned data)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import serve

from flows.deletion import deletion, process_pending
from flows.train import consolidate
from tasks.context import Context


def deployments(ctx: Context, cron: str | None = None, interval: float | None = None) -> list:
    """`process-pending-<model>` on its schedule, `deletion-<model>` on demand, `consolidate-<model>`
    on ``schedule.consolidate_cron``."""
    schedule = ctx.params.schedule
    params = {"model_name": ctx.model_name, "params_path": str(ctx.settings.params_path)}
    timing: dict[str, Any] = ({"interval": timedelta(seconds=interval)} if interval
                              else {"cron": cron or schedule.cron, "timezone": schedule.timezone})
    return [
        process_pending.to_deployment(name=f"process-pending-{ctx.model_name}", parameters=params,
                                      description="Process every pending deletion request of the model.",
                                      tags=["lau", "scheduled"], **timing),
        deletion.to_deployment(name=f"deletion-{ctx.model_name}", parameters=params,
                               description="Process one deletion request now (pass request_id).",
                               tags=["lau", "on-demand"]),
        consolidate.to_deployment(name=f"consolidate-{ctx.model_name}", parameters=params,
                                  description="Retrain on the cleaned data, gate, promote: the features forget too.",
                                  tags=["lau", "scheduled"], cron=schedule.consolidate_cron,
                                  timezone=schedule.timezone),
    ]


def serve_deployments(ctx: Context, cron: str | None = None, interval: float | None = None) -> None:
    """Serve the deployments in this process until interrupted (a warm worker: torch, MLflow and
    the feature cache stay loaded between runs)."""
    serve(*deployments(ctx, cron, interval))
