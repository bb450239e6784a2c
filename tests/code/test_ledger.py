"""The deletion-request ledger (tasks/ledger.py) on an in-process S3."""

from __future__ import annotations

import math

import pytest

from lau.errors import BadInput
from tasks.ledger import Ledger, Outcome, RejectedBy, Request, RequestStatus, check_drop


def test_a_request_round_trips_with_its_own_threshold(storage) -> None:  # noqa: ANN001
    ledger = Ledger(storage)
    filed = ledger.add("m", [5, 3], "withdrawn consent", max_retain_drop=4.5)
    again = ledger.get(filed.request_id, "m")
    assert again.classes == [3, 5] and again.max_retain_drop == 4.5 and again.status is RequestStatus.PENDING
    assert again.history[0]["status"] == "pending"


def test_updates_rewrite_the_whole_record_and_keep_the_history(storage) -> None:  # noqa: ANN001
    ledger = Ledger(storage)
    request = ledger.add("m", [3])
    ledger.update(request, RequestStatus.RUNNING, "attempt 1", attempts=1)
    ledger.update(request, RequestStatus.REJECTED, "gate failed", rejected_by=RejectedBy.GATE,
                  metrics={"forget_acc": float("nan")})
    stored = ledger.get(request.request_id, "m")
    assert [h["status"] for h in stored.history] == ["pending", "running", "rejected"]
    assert stored.metrics == {"forget_acc": None}  # NaN is not JSON: stored as null
    assert stored.outcome is Outcome.GATE_REJECTED


def test_an_unknown_field_is_a_programming_error_not_a_silent_no_op(storage) -> None:  # noqa: ANN001
    ledger = Ledger(storage)
    with pytest.raises(AttributeError):
        ledger.update(ledger.add("m", [3]), RequestStatus.RUNNING, nonsense=1)


def test_retryable_requests_are_the_unfinished_ones_oldest_first(storage) -> None:  # noqa: ANN001
    ledger = Ledger(storage)
    first, second, third = (ledger.add("m", [c]) for c in (1, 2, 3))
    ledger.update(first, RequestStatus.FAILED, "S3 down")
    ledger.update(second, RequestStatus.REGISTERED, "version 2")
    ledger.add("other-model", [4])
    assert [r.request_id for r in ledger.retryable("m")] == [first.request_id, third.request_id]


def test_an_unknown_request_is_bad_input(storage) -> None:  # noqa: ANN001
    with pytest.raises(BadInput, match="unknown request id"):
        Ledger(storage).get("req-20000101-deadbeef")


@pytest.mark.parametrize(("status", "rejected_by", "outcome"), [
    ("registered", None, Outcome.REGISTERED), ("rejected", "gate", Outcome.GATE_REJECTED),
    ("rejected", "input", Outcome.BAD_INPUT), ("failed", None, Outcome.FAILED), ("running", None, None)])
def test_the_outcome_follows_the_status(status: str, rejected_by: str | None, outcome: Outcome | None) -> None:
    assert Request("r", "m", [3], status=status, rejected_by=rejected_by).outcome == outcome


@pytest.mark.parametrize("value", [float("nan"), math.inf, -math.inf, 100.5, -101.0, "5"])
def test_a_threshold_must_be_finite_points_between_minus_100_and_100(value: object) -> None:
    with pytest.raises(BadInput):
        check_drop(value)  # type: ignore[arg-type]


def test_listing_again_reads_only_the_records_that_changed(storage, monkeypatch) -> None:  # noqa: ANN001
    ledger = Ledger(storage)
    first, second = ledger.add("m", [1]), ledger.add("m", [2])
    ledger.list("m")
    reads = []
    original = storage.get_json
    monkeypatch.setattr(storage, "get_json", lambda key: reads.append(key) or original(key))
    assert len(ledger.list("m")) == 2 and reads == []  # nothing changed: one LIST, no GET
    Ledger(storage).update(Ledger(storage).get(second.request_id, "m"), RequestStatus.RUNNING, "by another process")
    reads.clear()
    statuses = {r.request_id: r.status for r in ledger.list("m")}
    assert reads == [Ledger.key("m", second.request_id)]
    assert statuses == {first.request_id: RequestStatus.PENDING, second.request_id: RequestStatus.RUNNING}
