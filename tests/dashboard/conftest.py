"""Ledger objects and registry versions as the pipeline writes them, for the dashboard's unit tests."""

from __future__ import annotations

import datetime as dt

import pytest

from dashboard.records import VersionRow

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def stamp(days_ago: float = 0.0, seconds: float = 0.0) -> str:
    return (NOW - dt.timedelta(days=days_ago) + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def ledger_object(request_id: str, status: str, *, classes=(3,), submitted_days_ago: float = 1.0,
                  took_s: float = 60.0, failed: tuple[str, ...] = (), error: str | None = None, **extra) -> dict:
    """A ledger record: filed ``submitted_days_ago``, final ``took_s`` seconds later."""
    submitted = stamp(submitted_days_ago)
    history = [{"at": submitted, "status": "pending", "note": "filed"}]
    record = {"request_id": request_id, "model": "m", "classes": list(classes), "reason": "", "status": status,
              "submitted_at": submitted, "updated_at": submitted, "attempts": 0, "history": history, **extra}
    if status in ("registered", "rejected", "failed", "running"):
        done = stamp(submitted_days_ago, took_s)
        history += [{"at": stamp(submitted_days_ago, 1), "status": "running", "note": "attempt 1"},
                    {"at": done, "status": status, "note": ""}]
        record |= {"updated_at": done, "attempts": 1}
    if status in ("registered", "rejected") and error is None:
        checks = [{"name": name, "value": 5.0, "threshold": 1.0, "op": "<=", "passed": name not in failed}
                  for name in ("forget_acc", "test_forget_acc", "retain_drop")]
        record["gate"] = {"passed": not failed, "checks": checks}
    if error:
        record["error"] = error
    return record


def version(number: int, *, parent: str = "", method: str = "lau", forgotten=(), acc: float = 90.0,
            gate: str = "passed", days_ago: float = 0.0, **tags: str) -> VersionRow:
    values = {"parent_version": parent, "method": method, "forgotten_classes": str(list(forgotten)),
              "excluded_classes": "[]", "test_retain_acc": str(acc), "gate": gate, **tags}
    return VersionRow("m", str(number), f"run{number}", NOW - dt.timedelta(days=days_ago),
                      {f"lau.{k}": v for k, v in values.items()})


@pytest.fixture
def now() -> dt.datetime:
    return NOW
