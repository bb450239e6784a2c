"""The erasure record (tasks/erasures.py): append-only, one object per class, idempotent."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tasks.erasures import ErasureRecord


def test_an_erasure_is_written_once_and_never_rewritten(storage) -> None:  # noqa: ANN001
    record = ErasureRecord(storage)
    first = record.append("m", (3,), "req-a", "2")
    again = record.append("m", (3, 5), "req-b", "3")  # a retry, or a later request naming class 3 again
    assert [e.class_id for e in first] == [3] and [e.class_id for e in again] == [5]
    entries = {e.class_id: e for e in record.list("m")}
    assert entries[3].request_id == "req-a" and entries[3].version == "2"
    assert record.classes("m") == (3, 5) and record.classes("another-model") == ()


def test_concurrent_appends_lose_no_class(storage) -> None:  # noqa: ANN001
    """One object per class, no read-modify-write: writers of different classes cannot overwrite
    each other (the model lock serialises deletions anyway; this holds without it)."""
    record = ErasureRecord(storage)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: record.append("m", (c,), f"req-{c}", str(c)), range(8)))
    assert record.classes("m") == tuple(range(8))
