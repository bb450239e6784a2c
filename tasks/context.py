"""The per-run context of every flow: params, settings and the clients of the stack's services."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import mlflow

from lau.config import Params, load_params
from tasks.erasures import ErasureRecord
from tasks.ledger import Ledger
from tasks.registry import Registry
from tasks.s3 import Storage
from tasks.settings import Settings, settings

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Params, settings and clients of one flow run (clients are created on first use)."""

    params: Params
    settings: Settings
    model_name: str

    @classmethod
    def load(cls, model_name: str | None = None, params_path: str | None = None) -> Context:
        path = Path(params_path or os.environ.get("LAU_PARAMS", "params.yaml"))
        params = _params(path)
        return cls(params, settings(params, path), model_name or params.registry.model_name)

    @cached_property
    def storage(self) -> Storage:
        return _shared(("storage", self.settings.bucket, self.settings.s3_endpoint, *_s3_credentials()),
                       lambda: Storage(self.settings))

    @cached_property
    def ledger(self) -> Ledger:
        return _shared(("ledger", self.settings.bucket, self.settings.s3_endpoint, *_s3_credentials()),
                       lambda: Ledger(self.storage))

    @cached_property
    def erasures(self) -> ErasureRecord:
        return _shared(("erasures", self.settings.bucket, self.settings.s3_endpoint, *_s3_credentials()),
                       lambda: ErasureRecord(self.storage))

    @cached_property
    def registry(self) -> Registry:
        return _shared(("registry", self.model_name, self.params.registry.alias, mlflow.get_tracking_uri()),
                       lambda: Registry(self.model_name, self.params.registry.alias))


# The clients of this process, shared by its flow runs: a long-running worker keeps one ledger (its
# ETag cache: a poll reads only the records that changed) and one erasure record, not one per run.
_CLIENTS: dict[tuple, Any] = {}
_LOCK = threading.RLock()  # a client may be made of another (the ledger of the storage)


def _shared(key: tuple, make: Callable[[], T]) -> T:
    with _LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = make()
        return _CLIENTS[key]


_PARAMS: dict[Path, tuple[tuple, Params]] = {}


def _params(path: Path) -> Params:
    """params.yaml, parsed again only when the file changed (a worker's passes read it once)."""
    try:
        stat = path.stat()
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    except OSError:
        return load_params(path)  # its own one-line error
    cached = _PARAMS.get(path)
    if cached is None or cached[0] != key:
        cached = _PARAMS[path] = (key, load_params(path))
    return cached[1]


def _s3_credentials() -> tuple[str | None, str | None]:
    return os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
