"""The deletion-request ledger: one JSON object per request on S3, ``requests/<model>/<id>.json``.

Status: pending -> running -> registered | rejected | failed. ``failed`` (any failure that is not
the request's fault: a service down after retries, a bug) and a ``running`` record found while
holding the model's lock (a crashed run) are retryable; ``registered`` and ``rejected`` are final.
Each write replaces the whole object (S3 puts are atomic), so a record is never half-written.
Only class ids and request ids are stored, with the caller's free-text reason.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import secrets
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from lau.errors import BadInput
from lau.utils import json_safe
from tasks.s3 import Storage

PREFIX = "requests/"


class RequestStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    REGISTERED = "registered"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (RequestStatus.REGISTERED, RequestStatus.REJECTED)


class Outcome(StrEnum):
    """How a request ended, as the `lau` command reports it (cli.output maps it to an exit code)."""

    REGISTERED = "registered"  # exit 0
    GATE_REJECTED = "gate_rejected"  # exit 1: the candidate failed a gate check
    BAD_INPUT = "bad_input"  # exit 2: the request itself cannot be done
    FAILED = "failed"  # exit 3: a service or the code failed; the request stays retryable


class RejectedBy(StrEnum):
    GATE = "gate"
    INPUT = "input"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def check_drop(value: float | None, what: str = "--max-retain-drop") -> float | None:
    """A gate threshold override: finite, between -100 and 100 points (negative = a strict gate)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInput(f"{what}: expected a finite number of points, got {value!r}")
    if not -100 <= value <= 100:
        raise BadInput(f"{what}: must be between -100 and 100 points, got {value:g}")
    return float(value)


@dataclass
class Request:
    """One deletion request and everything the pipeline recorded about it."""

    request_id: str
    model: str
    classes: list[int]
    reason: str = ""
    max_retain_drop: float | None = None  # the request's own gate threshold, used on every retry
    submitted_at: str = field(default_factory=now)
    status: RequestStatus = RequestStatus.PENDING
    rejected_by: RejectedBy | None = None
    attempts: int = 0
    flow_run_id: str | None = None
    parent_version: str | None = None
    version: str | None = None
    forgotten_classes: list[int] = field(default_factory=list)
    gate: dict | None = None
    metrics: dict | None = None
    timings: dict | None = None
    lau: dict | None = None  # the LAU settings the deletion chose
    report_uri: str | None = None
    error: str | None = None
    updated_at: str = field(default_factory=now)
    history: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = RequestStatus(self.status)
        self.rejected_by = RejectedBy(self.rejected_by) if self.rejected_by else None

    @property
    def outcome(self) -> Outcome | None:
        """None while the request is pending or running."""
        if self.status == RequestStatus.REGISTERED:
            return Outcome.REGISTERED
        if self.status == RequestStatus.REJECTED:
            return Outcome.GATE_REJECTED if self.rejected_by == RejectedBy.GATE else Outcome.BAD_INPUT
        if self.status == RequestStatus.FAILED:
            return Outcome.FAILED
        return None

    def to_json(self) -> dict[str, Any]:
        return json_safe({**asdict(self), "status": str(self.status),
                          "rejected_by": str(self.rejected_by) if self.rejected_by else None})

    @classmethod
    def from_json(cls, data: dict) -> Request:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def summary(self) -> dict[str, Any]:
        """The per-request JSON object of `lau forget --json` and `lau process --json`."""
        data = self.to_json()
        keys = ("request_id", "status", "model", "parent_version", "version", "classes", "forgotten_classes",
                "max_retain_drop", "gate", "metrics", "timings", "lau", "report_uri", "error")
        return {**{k: data[k] for k in keys}, "outcome": str(self.outcome) if self.outcome else None}


class Ledger:
    """Every model's deletion requests in one bucket. Listing reads only the records whose ETag
    changed since this Ledger last read them: a long-running worker polls it cheaply."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._records: dict[str, tuple[str, dict]] = {}  # key -> (ETag, record as stored)

    @staticmethod
    def key(model: str, request_id: str) -> str:
        return f"{PREFIX}{model}/{request_id}.json"

    def add(self, model: str, classes: list[int], reason: str = "",
            max_retain_drop: float | None = None) -> Request:
        """File a new pending request (its threshold override is validated and kept with it)."""
        request_id = f"req-{dt.datetime.now(dt.UTC):%Y%m%d}-{secrets.token_hex(4)}"
        request = Request(request_id, model, sorted(classes), reason, check_drop(max_retain_drop))
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
        """Every request (of ``model``), oldest first."""
        prefix = f"{PREFIX}{model}/" if model else PREFIX
        records = []
        for key, etag in self.storage.list_etags(prefix).items():
            if not key.endswith(".json"):
                continue
            cached = self._records.get(key)
            if cached is None or cached[0] != etag or not etag:
                data = self.storage.get_json(key)
                if data is None:  # deleted between the listing and the read
                    continue
                cached = self._records[key] = (etag, data)
            records.append(Request.from_json(copy.deepcopy(cached[1])))  # a caller's changes stay its own
        return sorted(records, key=lambda r: r.submitted_at)

    def retryable(self, model: str) -> list[Request]:
        """Requests still to do, oldest first (call while holding the model's deletion lock)."""
        return [r for r in self.list(model) if not r.status.final]

    def update(self, request: Request, status: RequestStatus, note: str = "", **fields: Any) -> Request:
        """Move a request to ``status`` with new fields; the whole record is rewritten at once."""
        for name, value in fields.items():
            if name not in Request.__dataclass_fields__:
                raise AttributeError(f"Request has no field {name!r}")
            setattr(request, name, value)
        request.status = RequestStatus(status)
        request.updated_at = now()
        request.history.append({"at": request.updated_at, "status": str(request.status), "note": note})
        self.storage.put_json(self.key(request.model, request.request_id), request.to_json())
        return request
