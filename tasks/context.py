"""The per-run context of every flow: params, settings and the clients of the stack's services."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from lau.config import Params, load_params
from tasks.erasures import ErasureRecord
from tasks.ledger import Ledger
from tasks.registry import Registry
from tasks.s3 import Storage
from tasks.settings import Settings, settings


@dataclass(frozen=True)
class Context:
    """Params, settings and clients of one flow run (clients are created on first use)."""

    params: Params
    settings: Settings
    model_name: str

    @classmethod
    def load(cls, model_name: str | None = None, params_path: str | None = None) -> Context:
        cfg = settings(params_path=params_path)
        params = load_params(cfg.params_path)
        return cls(params, cfg, model_name or params.registry.model_name)

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.storage)

    @cached_property
    def erasures(self) -> ErasureRecord:
        return ErasureRecord(self.storage)

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.model_name, self.params.registry.alias)
