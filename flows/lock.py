"""One deletion (or training) flow at a time per registered model: a Prefect global concurrency
limit of 1 named after the model. A crashed holder's lease expires after LEASE_S seconds."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from lau.utils import progress
from tasks.settings import InfraError

LEASE_S = 60  # the server's minimum; renewed while the holder lives
_UPSERTED: set[str] = set()  # limits this process has made sure exist (a worker's passes upsert once)


def wait_s() -> float:
    """How long a flow waits for the model's slot: LAU_LOCK_TIMEOUT seconds (900)."""
    return float(os.environ.get("LAU_LOCK_TIMEOUT", "900"))


def lock_name(model: str) -> str:
    return "lau-model-" + "".join(c if c.isalnum() or c == "-" else "-" for c in model.lower())


def _upsert(name: str) -> None:
    """Make sure the model's limit exists with limit 1. Prefect's upsert reads, then creates: two
    flows starting at once on a new model both read nothing and the second create fails with
    ObjectAlreadyExists (seen in tests/reliability/test_exactly_once.py); then it exists: read again."""
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, limit=1)
        except ObjectAlreadyExists:
            client.upsert_global_concurrency_limit_by_name(name, limit=1)


@contextlib.contextmanager
def model_lock(model: str) -> Iterator[None]:
    """Hold the model's slot for the duration of the block (waits up to LAU_LOCK_TIMEOUT s)."""
    name = lock_name(model)
    if name not in _UPSERTED:
        try:
            _upsert(name)
        except Exception as err:  # noqa: BLE001 - any API failure is an infrastructure failure here
            raise InfraError(f"Prefect API unreachable ({type(err).__name__}): is `make up` running and "
                             "PREFECT_API_URL set?") from None
        _UPSERTED.add(name)
    progress(f"[lock] waiting for {name}")
    wait = wait_s()
    held = False
    try:
        with concurrency(name, occupy=1, timeout_seconds=wait, lease_duration=LEASE_S, strict=True):
            held = True
            progress(f"[lock] holding {name}")
            yield
    except TimeoutError:
        raise InfraError(f"another flow held {name} for over {wait:.0f} s; try again later") from None
    except Exception:
        if not held:  # the limit deleted meanwhile? the next try makes it again
            _UPSERTED.discard(name)
        raise
