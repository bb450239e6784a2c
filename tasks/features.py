"""The feature cache: local disk first, then S3 ``features/<key>/``, else extract once and upload.

Every copy is checked before it is read: the file's sha256 is recorded when it is written (on S3
as the object's metadata ``x-amz-meta-sha256``, written in the same request as the bytes; on disk in
``features.safetensors.sha256`` beside it). A copy without a recorded hash, whose bytes do not match
it, that does not load or that holds another key's features is a cache miss: one line on stderr,
and the copy is overwritten by a good one (downloaded, or extracted again). LAU never runs on it.

Those hashes live beside the data, so whoever can rewrite the data can rewrite them too. The
registry holds a third: every version is tagged with the sha256 of the features it was made from
(``lau.feature_cache_sha256``), and a deletion accepts only a copy with that hash (``expected``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task

from lau.errors import BadInput
from lau.features import FEATURES_FILE, FeatureSet, cache_key, load_features, save_features
from lau.models import SplitModel
from lau.utils import file_sha256, progress
from tasks.context import Context
from tasks.data import fetch
from tasks.extract import extract_sharded
from tasks.policy import IO

if TYPE_CHECKING:
    from tasks.s3 import Storage

SHA256_FILE = FEATURES_FILE + ".sha256"  # beside the local copy
SHA256_METADATA = "sha256"  # the S3 object's user metadata


@dataclass(frozen=True)
class CachedFeatures:
    features: FeatureSet
    source: str  # "local", "s3" or "extracted"
    seconds: float
    sha256: str  # of the cache file these features were read from (or written to)


def s3_key(key: str) -> str:
    return f"features/{key}/{FEATURES_FILE}"


@task(name="features (cache or extract)", **IO)
def cached_features(ctx: Context, model: SplitModel, depth: int, data_version: str,
                    pinned: tuple[str, str] | None = None) -> CachedFeatures:
    """F_f features of the lineage's data: a cache hit costs a file read, a miss one extraction.
    ``pinned``: (cache key, sha256) the registry recorded with the parent version; a copy under
    that key must have that hash (another key, e.g. after a depth change, has no pin)."""
    start = time.perf_counter()
    key = cache_key(model, depth, data_version)
    expected = pinned[1] if pinned and pinned[0] == key and pinned[1] else None
    local = ctx.settings.feature_dir / key
    if (found := read_local(local, key, expected)) is not None:
        return CachedFeatures(found[0], "local", time.perf_counter() - start, found[1])
    if (found := download(ctx.storage, key, local, expected)) is not None:
        return CachedFeatures(found[0], "s3", time.perf_counter() - start, found[1])
    progress(f"[features] cache miss for {key}: extracting")
    split = fetch(ctx.storage, data_version, ctx.settings.work_dir)
    features = extract_sharded(ctx.params, model, split, data_version, cache_dir=local, depth=depth)
    digest = write_local(local, lambda tmp: save_features(features, tmp))
    ctx.storage.put_file(s3_key(key), local / FEATURES_FILE, metadata={SHA256_METADATA: digest})
    return CachedFeatures(features, "extracted", time.perf_counter() - start, digest)


def _mismatch(recorded: str | None, actual: str, expected: str | None) -> str | None:
    """Why a copy is refused, or None when it is good."""
    if recorded is None:
        return "has no recorded sha256"
    if actual != recorded:
        return "does not match its sha256"
    if expected is not None and recorded != expected:
        return "is not the copy the registry recorded (lau.feature_cache_sha256)"
    return None


def read_local(folder: Path, key: str, expected: str | None = None) -> tuple[FeatureSet, str] | None:
    """The local copy and its sha256 if it matches the hash recorded beside it (and ``expected``),
    else None (a miss)."""
    path = folder / FEATURES_FILE
    if not path.is_file():
        return None
    recorded = (folder / SHA256_FILE).read_text().strip() if (folder / SHA256_FILE).is_file() else None
    actual = file_sha256(path) if recorded is not None else ""
    if (why := _mismatch(recorded, actual, expected)) is not None:
        return discard(path, why)
    features = checked_load(path, key)
    return None if features is None else (features, actual)


def download(storage: Storage, key: str, folder: Path,
             expected: str | None = None) -> tuple[FeatureSet, str] | None:
    """The S3 copy and its sha256, if its bytes match the hash in its metadata (and ``expected``),
    saved as the local copy; else None."""
    found = storage.get_object(s3_key(key))
    if found is None:
        return None
    data, metadata = found
    actual = hashlib.sha256(data).hexdigest()
    if (why := _mismatch(metadata.get(SHA256_METADATA), actual, expected)) is not None:
        return discard(storage.uri(s3_key(key)), why)
    write_local(folder, lambda tmp: (tmp / FEATURES_FILE).write_bytes(data))
    features = checked_load(folder / FEATURES_FILE, key)
    return None if features is None else (features, actual)


def write_local(folder: Path, write: Callable[[Path], object]) -> str:
    """Make the local copy: ``write(tmp)`` creates the cache file in a private folder, its sha256 is
    recorded beside it, and both are moved in place (a reader never sees a half-written file).
    Returns the sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        write(tmp)
        digest = file_sha256(tmp / FEATURES_FILE)
        (tmp / SHA256_FILE).write_text(digest + "\n")
        os.replace(tmp / FEATURES_FILE, folder / FEATURES_FILE)
        os.replace(tmp / SHA256_FILE, folder / SHA256_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return digest


def checked_load(path: Path, key: str) -> FeatureSet | None:
    """Load a copy whose hash checked out; one that does not load, or holds other features, is a miss."""
    try:
        features = load_features(path)
    except BadInput as err:
        return discard(path, f"does not load ({err})")
    if features.key != key:
        return discard(path, f"holds the features of cache key {features.key}")
    return features


def discard(where: Path | str, why: str) -> None:
    """One line on stderr for a copy that failed its check; the caller treats it as a miss."""
    progress(f"[features] cached copy {where} {why}: treated as a cache miss")
    return None


@task(name="retire feature caches of earlier lineages", **IO)
def retire(ctx: Context, data_version: str) -> list[str]:
    """Delete the feature caches (local and S3) of the model's lineages on other data versions.

    A lineage keeps its cache, forgotten classes included, while it serves: LAU keeps every class
    forgotten so far in D_f, so a later deletion cannot bring an earlier one back. When a new
    lineage is trained on data without those classes, the old caches go.
    """
    keys = {v.tag("feature_cache_key") for v in ctx.registry.versions()
            if v.tag("data_version") != data_version and v.tag("feature_cache_key")}
    removed = []
    for key in sorted(keys):
        shutil.rmtree(ctx.settings.feature_dir / key, ignore_errors=True)
        if ctx.storage.exists(s3_key(key)):
            ctx.storage.delete(s3_key(key))
            removed.append(key)
    return removed
