"""Ledger steps as Prefect tasks (I/O, retried on infrastructure failures)."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.context import Context
from tasks.ledger import Request, RequestStatus
from tasks.policy import IO


@task(name="read request", **IO)
def read_request(ctx: Context, request_id: str) -> Request:
    return ctx.ledger.get(request_id, ctx.model_name)


@task(name="update request", **IO)
def record(ctx: Context, request: Request, status: RequestStatus, note: str = "", **fields: Any) -> Request:
    return ctx.ledger.update(request, status, note, **fields)


@task(name="list retryable requests", **IO)
def retryable_requests(ctx: Context) -> list[Request]:
    return ctx.ledger.retryable(ctx.model_name)


@task(name="read erasure record", **IO)
def erased_classes(ctx: Context) -> tuple[int, ...]:
    """Every class the model has erased, from the erasure record (the single source of truth)."""
    return ctx.erasures.classes(ctx.model_name)


@task(name="append to erasure record", **IO)
def append_erasures(ctx: Context, classes: tuple[int, ...], request_id: str, version: str) -> None:
    ctx.erasures.append(ctx.model_name, classes, request_id, version)
