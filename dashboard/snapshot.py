"""One model's state, read from the ledger and the erasure record (S3) and the registry (MLflow).

The page and /metrics both read a ModelView; a view is rebuilt at most every ``ledger_ttl_s`` seconds
(the sources' own caches make a rebuild one S3 LIST plus, every few seconds, one MLflow search).
A source that is down leaves its part empty and says so in ``missing``; the rest is still shown.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dashboard.records import (
    Lineage,
    RequestRow,
    VersionRow,
    last_consolidation,
    lineage,
    request_row,
    status_counts,
)
from dashboard.registry import Registry, tamper_problem
from dashboard.s3 import Bucket, SourceDown
from dashboard.settings import Settings
from tasks.erasures import PREFIX as ERASURES_PREFIX
from tasks.erasures import Erasure
from tasks.ledger import PREFIX as LEDGER_KEYS_PREFIX

LEDGER_PREFIX = LEDGER_KEYS_PREFIX
MODELS_TTL_S = 30.0  # the list of models (the page's navigation, the metrics' model label) changes rarely
# Views a scrape reads at once: each is a few S3 and MLflow round trips, mostly waiting. Measured with
# 101 models on the local stack, a cold scrape of /metrics: 57.6 s one at a time, 29.0 s with 8 threads
# (docs/dashboard.md).
SCRAPE_THREADS = 8
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ModelView:
    """Everything the page and the metrics show for one model, at one moment."""

    model: str
    at: dt.datetime
    requests: tuple[RequestRow, ...] | None = None  # None: the ledger could not be read
    erasures: tuple[Erasure, ...] | None = None
    versions: tuple[VersionRow, ...] | None = None  # None: the registry could not be read
    champion: VersionRow | None = None
    lineage: Lineage | None = None
    consolidation: VersionRow | None = None
    tamper: str | None = None  # why the champion fails the tamper check, if it does
    per_class: tuple[tuple[float, ...], tuple[str, ...]] | None = None
    missing: tuple[str, ...] = field(default_factory=tuple)  # one line per source that failed

    @property
    def open_requests(self) -> list[RequestRow]:
        """Requests not erased yet, the oldest first."""
        return sorted((r for r in self.requests or () if r.is_open), key=lambda r: r.submitted_at)

    @property
    def finished(self) -> list[RequestRow]:
        """Registered and rejected requests, the most recent first."""
        done = [r for r in self.requests or () if not r.is_open]
        return sorted(done, key=lambda r: r.finished_at or r.updated_at, reverse=True)

    @property
    def counts(self) -> dict[str, int]:
        return status_counts(self.requests or ())

    @property
    def erased_classes(self) -> tuple[int, ...] | None:
        """Classes the model has erased: its erasure record, and the classes of its registered
        requests (ledgers written before the erasure record existed); None when S3 is unreadable."""
        if self.requests is None or self.erasures is None:
            return None
        registered = {c for r in self.requests if r.status == "registered" for c in r.classes}
        return tuple(sorted({e.class_id for e in self.erasures} | registered))

    def oldest_open_age_s(self) -> float:
        """Age of the oldest open request in seconds (0 when none is open)."""
        found = self.open_requests
        return found[0].age_s(self.at) if found else 0.0


class Views:
    """Builds and briefly caches ModelViews; the one object the server shares between threads."""

    def __init__(self, settings: Settings, bucket: Bucket, registry: Registry):
        self.settings, self.bucket, self.registry = settings, bucket, registry
        self._views: dict[str, tuple[float, ModelView]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._models: tuple[float, list[str]] = (0.0, [])

    def get(self, model: str) -> ModelView:
        with self._guard:
            lock = self._locks.setdefault(model, threading.Lock())
        with lock:
            hit = self._views.get(model)
            if hit is not None and time.monotonic() - hit[0] < self.settings.ledger_ttl_s:
                return hit[1]
            view = self.build(model)
            self._views[model] = (time.monotonic(), view)
            return view

    def get_all(self) -> list[ModelView]:
        """The view of every known model (``models()``, in that order), read concurrently."""
        models = self.models()
        with ThreadPoolExecutor(max_workers=SCRAPE_THREADS, thread_name_prefix="lau-view") as pool:
            return list(pool.map(self.get, models))

    def models(self) -> list[str]:
        """The default model and every model with a ledger or an erasure record in the bucket."""
        stamp, names = self._models
        if time.monotonic() - stamp > MODELS_TTL_S:
            try:
                names = sorted({*self.bucket.children(LEDGER_PREFIX), *self.bucket.children(ERASURES_PREFIX)})
            except SourceDown:
                names = []
            self._models = (time.monotonic(), names)
        found = [n for n in names if MODEL_NAME.match(n)]
        return [self.settings.default_model, *(n for n in found if n != self.settings.default_model)]

    def build(self, model: str) -> ModelView:
        """Read every source now; what fails is named in ``missing``."""
        missing: list[str] = []
        requests = erasures = None
        try:
            rows = self.bucket.json_objects(f"{LEDGER_PREFIX}{model}/", request_row)
            requests = tuple(sorted(rows.values(), key=lambda r: r.submitted_at))
            found = self.bucket.json_objects(f"{ERASURES_PREFIX}{model}/", Erasure.from_json)
            erasures = tuple(sorted(found.values(), key=lambda e: (e.erased_at, e.class_id)))
        except SourceDown as err:
            missing.append(f"{err}: requests and erasures cannot be shown")
        registry = self._registry_part(model, erasures, missing)
        return ModelView(model=model, at=dt.datetime.now(dt.UTC), requests=requests, erasures=erasures,
                         missing=tuple(missing), **registry)

    def _registry_part(self, model: str, erasures: tuple[Erasure, ...] | None, missing: list[str]) -> dict:
        try:
            versions = tuple(self.registry.versions(model))
            champion = self.registry.champion(model)
        except SourceDown as err:
            missing.append(f"{err}: the champion, the lineage and per-class accuracy cannot be shown")
            return {}
        part: dict = {"versions": versions, "champion": champion, "lineage": lineage(champion, versions),
                      "consolidation": last_consolidation(versions)}
        if champion is None:
            return part
        erased = [e.class_id for e in erasures or ()]  # the record alone: what tasks.lineage checks
        part["tamper"] = tamper_problem(champion, versions, erased)
        try:
            found = self.registry.per_class_test_acc(champion.run_id) if champion.run_id else None
            part["per_class"] = (tuple(found[0]), tuple(found[1])) if found else None
        except SourceDown as err:
            missing.append(f"{err}: per-class accuracy cannot be shown")
        return part
