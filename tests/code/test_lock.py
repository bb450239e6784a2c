"""flows/lock.py: the model's lock, a Prefect global concurrency limit made on first use."""

from __future__ import annotations

import contextlib

import pytest
from prefect.exceptions import ObjectAlreadyExists

from flows import lock


class RacingClient:
    """Prefect's client as the second of two flows starting at once on a new model sees it: its
    upsert read no limit, then its create found the other flow's (ObjectAlreadyExists)."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits

    def __enter__(self) -> RacingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def upsert_global_concurrency_limit_by_name(self, name: str, limit: int) -> None:
        if name not in self.limits:
            self.limits[name] = limit  # the other flow's create, between this one's read and create
            raise ObjectAlreadyExists(None)
        self.limits[name] = limit


def test_two_flows_making_a_new_models_lock_at_once_both_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    limits: dict[str, int] = {}
    held = []
    monkeypatch.setattr(lock, "get_client", lambda sync_client: RacingClient(limits))
    monkeypatch.setattr(lock, "concurrency", lambda name, **kw: contextlib.nullcontext(held.append(name)))
    monkeypatch.setattr(lock, "_UPSERTED", set())
    with lock.model_lock("new-model"):
        pass
    assert held == ["lau-model-new-model"] and limits == {"lau-model-new-model": 1}
