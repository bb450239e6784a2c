"""What the dashboard shows, as typed records built from the ledger's JSON and the registry's tags.

Pure: no I/O. Every reader tolerates records written by older or newer code: a missing field is
None, an unknown one is ignored (``flow_run_id`` and ``max_retain_drop`` on requests; the
``lau.root_version``, ``lau.root_test_retain_acc`` and ``lau.consolidated_from`` tags on versions).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

OPEN = ("pending", "running", "failed")  # not erased yet: failed is retried by the next `lau process`
STATUSES = ("pending", "running", "registered", "rejected", "failed")
INPUT_REJECTION = "input"  # a request refused before any candidate existed (unknown class ...)
TAG = "lau."


def parse_time(text: Any) -> dt.datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime, or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Check:
    """One gate check of a request's verdict."""

    name: str
    value: float | None
    threshold: float | None
    op: str
    passed: bool

    def describe(self) -> str:
        return f"{self.name} = {_num(self.value)} (must be {self.op} {_num(self.threshold)})"


@dataclass(frozen=True)
class RequestRow:
    """One deletion request as the ledger holds it."""

    request_id: str
    model: str
    classes: tuple[int, ...]
    status: str
    reason: str
    submitted_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None  # when it became registered (or rejected)
    attempts: int
    version: str | None
    parent_version: str | None
    gate_passed: bool | None  # None: no verdict (refused before the gate, or not run yet)
    checks: tuple[Check, ...]
    error: str | None
    report_uri: str | None
    flow_run_id: str | None
    max_retain_drop: float | None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def erasure_s(self) -> float | None:
        """Time to erasure: submitted to registered, in seconds (None unless registered)."""
        if self.status != "registered" or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.submitted_at).total_seconds())

    def age_s(self, now: dt.datetime) -> float:
        return max(0.0, (now - self.submitted_at).total_seconds())

    def rejection_reasons(self) -> tuple[str, ...]:
        """The failed gate checks of a rejected request, or ``input`` when it never reached the gate."""
        if self.status != "rejected":
            return ()
        return tuple(c.name for c in self.failed_checks) or (INPUT_REJECTION,)


def request_row(data: Mapping[str, Any]) -> RequestRow | None:
    """A ledger object as a RequestRow; None when it is not one (no id or no submission time)."""
    submitted = parse_time(data.get("submitted_at"))
    if not data.get("request_id") or submitted is None:
        return None
    status = str(data.get("status") or "pending")
    history = [h for h in data.get("history") or [] if isinstance(h, Mapping)]
    finished = next((parse_time(h.get("at")) for h in reversed(history) if h.get("status") == status), None)
    gate = data.get("gate") if isinstance(data.get("gate"), Mapping) else None
    return RequestRow(
        request_id=str(data["request_id"]), model=str(data.get("model") or ""),
        classes=tuple(_ints(data.get("classes"))), status=status, reason=str(data.get("reason") or ""),
        submitted_at=submitted, updated_at=parse_time(data.get("updated_at")) or submitted,
        finished_at=(finished or parse_time(data.get("updated_at"))) if status in ("registered", "rejected") else None,
        attempts=int(data.get("attempts") or 0), version=_text(data.get("version")),
        parent_version=_text(data.get("parent_version")),
        gate_passed=bool(gate.get("passed")) if gate is not None else None,
        checks=tuple(_check(c) for c in (gate or {}).get("checks") or [] if isinstance(c, Mapping)),
        error=_text(data.get("error")), report_uri=_text(data.get("report_uri")),
        flow_run_id=_text(data.get("flow_run_id")), max_retain_drop=_float(data.get("max_retain_drop")))


@dataclass(frozen=True)
class VersionRow:
    """A registered model version with its ``lau.*`` tags (read-only view of MLflow's record)."""

    name: str
    version: str
    run_id: str
    created_at: dt.datetime | None
    tags: Mapping[str, str]

    def tag(self, key: str, default: str = "") -> str:
        return self.tags.get(TAG + key, default)

    @property
    def forgotten(self) -> tuple[int, ...]:
        return _json_ints(self.tag("forgotten_classes"))

    @property
    def excluded(self) -> tuple[int, ...]:
        return _json_ints(self.tag("excluded_classes"))

    @property
    def method(self) -> str:
        return self.tag("method") or "?"

    @property
    def test_retain_acc(self) -> float | None:
        return _float(self.tag("test_retain_acc"))

    @property
    def has_lau_tags(self) -> bool:
        return any(key.startswith(TAG) for key in self.tags)


@dataclass(frozen=True)
class LineageStep:
    """One version on the path from the lineage root to the champion."""

    version: VersionRow
    newly_erased: tuple[int, ...]  # classes this version erased that its parent still served
    drop_vs_root: float | None  # root's test-retain accuracy minus this version's, in points


@dataclass(frozen=True)
class Lineage:
    steps: tuple[LineageStep, ...]  # root first, champion last
    root_acc: float | None
    broken: str | None  # why the walk stopped before a root (a missing parent, a loop), if it did

    @property
    def champion(self) -> VersionRow | None:
        return self.steps[-1].version if self.steps else None


def lineage(champion: VersionRow | None, versions: Iterable[VersionRow]) -> Lineage:
    """Walk ``lau.parent_version`` from the champion back to the root (a version with no parent:
    a training, an adoption or a consolidation)."""
    if champion is None:
        return Lineage((), None, None)
    by_number = {v.version: v for v in versions}
    chain, broken = [champion], None
    while parent := chain[-1].tag("parent_version"):
        if parent in {v.version for v in chain}:
            broken = f"lau.parent_version loops at version {parent}"
            break
        if parent not in by_number:
            broken = f"version {chain[-1].version} names parent {parent}, which does not exist"
            break
        chain.append(by_number[parent])
    chain.reverse()
    root_acc = _float(champion.tag("root_test_retain_acc")) if champion.tag("root_version") else None
    root_acc = root_acc if root_acc is not None else chain[0].test_retain_acc
    steps, before = [], set(chain[0].excluded)
    for version in chain:
        erased = set(version.forgotten) | set(version.excluded)
        acc = version.test_retain_acc
        drop = None if acc is None or root_acc is None else round(root_acc - acc, 4)
        steps.append(LineageStep(version, tuple(sorted(erased - before)), drop))
        before |= erased
    return Lineage(tuple(steps), root_acc, broken)


def last_consolidation(versions: Iterable[VersionRow]) -> VersionRow | None:
    """The newest version made by a consolidation (a retrain on the cleaned data), if any."""
    made = [v for v in versions if v.method == "consolidate" or v.tag("consolidated_from")]
    return max(made, key=lambda v: int(v.version) if v.version.isdigit() else 0, default=None)


def status_counts(requests: Iterable[RequestRow]) -> dict[str, int]:
    """Requests per status, every status present (zeros included)."""
    counts = Counter(r.status for r in requests)
    return {status: counts.get(status, 0) for status in (*STATUSES, *sorted(set(counts) - set(STATUSES)))}


def rejections_by_reason(requests: Iterable[RequestRow]) -> dict[str, int]:
    """Rejected requests per failed gate check (a request failing two checks counts in both), and
    ``input`` for requests refused before the gate; most frequent first."""
    counts = Counter(reason for r in requests for reason in r.rejection_reasons())
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _check(data: Mapping[str, Any]) -> Check:
    return Check(str(data.get("name") or "?"), _float(data.get("value")), _float(data.get("threshold")),
                 str(data.get("op") or "?"), bool(data.get("passed")))


def _ints(values: Any) -> list[int]:
    try:
        return sorted(int(v) for v in values or [])
    except (TypeError, ValueError):
        return []


def _json_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(_ints(json.loads(text))) if text else ()
    except ValueError:
        return ()


def _float(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
