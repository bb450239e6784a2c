"""The deletion-request ledger: one JSON object per request on S3, ``requests/<model>/<id>.json``.

Status: pending -> running -> registered | rejected | failed. ``failed`` (an infrastructure failure
after retries) and a ``running`` record found while holding the model's lock (a crashed run) are
both retryable; ``registered`` and ``rejected`` are final. Each write replaces the whole object
(S3 puts are atomic), so a record is never half-written. Only class ids and request ids are stored.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from lau.errors import BadInput
from lau.utils import json_safe
from tasks.s3 import Storage

FINAL = ("registered", "rejected")
RETRYABLE = ("pending", "running", "failed")
PREFIX = "requests/"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class Request:
    request_id: str
    model: str
    classes: list[int]
    reason: str = ""
    submitted_at: str = field(default_factory=now)
    status: str = "pending"
    attempts: int = 0
    parent_version: str | None = None
    version: str | None = None
    forgotten_classes: list[int] = field(default_factory=list)
    gate: dict | None = None
    metrics: dict | None = None
    timings: dict | None = None
    report_uri: str | None = None
    error: str | None = None
    updated_at: str = field(default_factory=now)
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Request:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def summary(self) -> dict[str, Any]:
        """The CONTRACT's per-request JSON object."""
        return {"request_id": self.request_id, "status": self.status, "model": self.model,
                "parent_version": self.parent_version, "version": self.version,
                "classes": self.classes, "forgotten_classes": self.forgotten_classes,
                "gate": self.gate, "metrics": self.metrics, "timings": self.timings,
                "report_uri": self.report_uri, "error": self.error}


class Ledger:
    def __init__(self, storage: Storage):
        self.storage = storage

    @staticmethod
    def key(model: str, request_id: str) -> str:
        return f"{PREFIX}{model}/{request_id}.json"

    def add(self, model: str, classes: list[int], reason: str = "") -> Request:
        """File a new pending request."""
        request_id = f"req-{dt.datetime.now(dt.UTC):%Y%m%d}-{secrets.token_hex(4)}"
        request = Request(request_id, model, sorted(classes), reason)
        request.history.append({"at": request.submitted_at, "status": "pending", "note": "filed"})
        self.storage.put_json(self.key(model, request_id), request.to_json())
        return request

    def get(self, request_id: str, model: str | None = None) -> Request:
        """A request by id (searched across models when ``model`` is None); BadInput if unknown."""
        if model:
            data = self.storage.get_json(self.key(model, request_id))
        else:
            keys = [k for k in self.storage.list(PREFIX) if k.endswith(f"/{request_id}.json")]
            data = self.storage.get_json(keys[0]) if keys else None
        if data is None:
            raise BadInput(f"unknown request id '{request_id}'; see `lau request list`")
        return Request.from_json(data)

    def list(self, model: str | None = None) -> list[Request]:
        prefix = f"{PREFIX}{model}/" if model else PREFIX
        records = [self.storage.get_json(k) for k in self.storage.list(prefix) if k.endswith(".json")]
        return sorted((Request.from_json(r) for r in records if r), key=lambda r: r.submitted_at)

    def retryable(self, model: str) -> list[Request]:
        """Requests still to do, oldest first (call while holding the model's deletion lock)."""
        return [r for r in self.list(model) if r.status in RETRYABLE]

    def update(self, request: Request, status: str, note: str = "", **fields: Any) -> Request:
        """Move a request to ``status`` with new fields; the whole record is rewritten at once."""
        for name, value in fields.items():
            setattr(request, name, value)
        request.status = status
        request.updated_at = now()
        request.history.append({"at": request.updated_at, "status": status, "note": note})
        self.storage.put_json(self.key(request.model, request.request_id), json_safe(request.to_json()))
        return request


# ------------------------------------------------------------------ Prefect tasks over the ledger

from prefect import task  # noqa: E402

from tasks.common import IO, Context  # noqa: E402


@task(name="read request", **IO)
def read_request(ctx: Context, request_id: str) -> Request:
    return ctx.ledger.get(request_id, ctx.model_name)


@task(name="update request", **IO)
def record(ctx: Context, request: Request, status: str, note: str = "", **fields: Any) -> Request:
    return ctx.ledger.update(request, status, note, **fields)


@task(name="list retryable requests", **IO)
def retryable_requests(ctx: Context) -> list[Request]:
    return ctx.ledger.retryable(ctx.model_name)

