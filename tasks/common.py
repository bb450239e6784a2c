"""What every task shares: the retry policy for I/O and the per-run context."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from prefect.cache_policies import NO_CACHE

from lau.config import Params, load_params
from tasks.settings import InfraError, Settings, settings


def retry_on_infra(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed I/O task only when a service failed, never on bad input or math."""
    try:
        state.result()
    except InfraError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final
        return False
    return False


# Tasks that talk to S3 or MLflow: three retries with backoff ride out a short outage.
IO = {"retries": 3, "retry_delay_seconds": [2, 5, 10], "retry_condition_fn": retry_on_infra,
      "cache_policy": NO_CACHE}
# Tasks that compute: no retries (a deterministic failure would fail again), no caching.
MATH = {"cache_policy": NO_CACHE}


@dataclass(frozen=True)
class Context:
    """Params, settings and clients of one flow run."""

    params: Params
    settings: Settings
    model_name: str

    @classmethod
    def load(cls, model_name: str | None = None, params_path: str | None = None) -> Context:
        cfg = settings(params_path=params_path)
        params = load_params(cfg.params_path)
        return cls(params, cfg, model_name or params.registry.model_name)

    @cached_property
    def storage(self):  # noqa: ANN201 - tasks.s3.Storage, imported lazily
        from tasks.s3 import Storage

        return Storage(self.settings)

    @cached_property
    def ledger(self):  # noqa: ANN201
        from tasks.ledger import Ledger

        return Ledger(self.storage)

    @cached_property
    def registry(self):  # noqa: ANN201
        from tasks.registry import Registry

        return Registry(self.model_name, self.params.registry.alias)
