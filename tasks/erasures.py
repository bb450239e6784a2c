"""The erasure record: what each registered model has erased, the single source of truth.

One immutable JSON object per erased class on S3, beside the ledger:
``erasures/<model>/class-<id>.json`` = {model, class_id, request_id, version, erased_at}.
Append-only: an entry is written once, when the deletion that erased the class is promoted, and is
never rewritten or deleted (a second append of the same class is a no-op). Every path that makes a
model (retrain, consolidation, `dvc repro`, adoption) reads it, so a fresh checkout, a container
image or a read-only params file cannot lose an erasure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from tasks.s3 import Storage

PREFIX = "erasures/"


@dataclass(frozen=True)
class Erasure:
    """One erased class of one model: which request erased it, in which version, when."""

    model: str
    class_id: int
    request_id: str
    version: str
    erased_at: str  # ISO 8601, UTC

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Erasure:
        return cls(str(data["model"]), int(data["class_id"]), str(data["request_id"]),
                   str(data["version"]), str(data["erased_at"]))


class ErasureRecord:
    """The erasure record of every model in one bucket. Listing reads only the entries whose ETag
    changed since this record last read them (entries are immutable: a long-running worker reads
    each once)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._entries: dict[str, tuple[str, dict]] = {}  # key -> (ETag, entry as stored)

    @staticmethod
    def key(model: str, class_id: int) -> str:
        return f"{PREFIX}{model}/class-{int(class_id):05d}.json"

    def list(self, model: str) -> list[Erasure]:
        """Every erasure of ``model``, oldest first."""
        entries = []
        for key, etag in self.storage.list_etags(f"{PREFIX}{model}/").items():
            if not key.endswith(".json"):
                continue
            cached = self._entries.get(key)
            if cached is None or cached[0] != etag or not etag:  # read again only what changed
                data = self.storage.get_json(key)
                if data is None:
                    continue
                cached = self._entries[key] = (etag, data)
            entries.append(Erasure.from_json(cached[1]))
        return sorted(entries, key=lambda e: (e.erased_at, e.class_id))

    def classes(self, model: str) -> tuple[int, ...]:
        """The erased class ids of ``model``, sorted."""
        return tuple(sorted({e.class_id for e in self.list(model)}))

    def append(self, model: str, classes: tuple[int, ...] | list[int], request_id: str,
               version: str) -> list[Erasure]:
        """Record ``classes`` as erased by ``request_id`` in ``version``; classes already recorded
        keep their first entry (idempotent, so a retried deletion writes nothing twice)."""
        written = []
        for class_id in sorted(set(int(c) for c in classes)):
            key = self.key(model, class_id)
            if self.storage.exists(key):
                continue
            entry = Erasure(model, class_id, request_id, str(version),
                            dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))
            self.storage.put_json(key, entry.to_json())
            written.append(entry)
        return written
