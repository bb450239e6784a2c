"""Deployments: the scheduled pass over pending requests (cron from params.yaml) and on-demand deletion."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import serve

from flows.deletion import deletion, process_pending


def deployments(ctx: Any, cron: str | None = None, interval: float | None = None) -> list:
    """The two deployments of a model: `process-pending` on its schedule, `deletion` on demand."""
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
    ]


def serve_deployments(ctx: Any, cron: str | None = None, interval: float | None = None) -> None:
    """Serve both deployments in this process until interrupted."""
    serve(*deployments(ctx, cron, interval))
