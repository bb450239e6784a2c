"""The feature cache: local disk first, then S3 ``features/<key>/``, else extract once and upload.

Every copy is checked before it is read: the file's sha256 is recorded when it is written (on S3
as the object's metadata ``x-amz-meta-sha256``, written in the same request as the bytes; on disk in
``features.safetensors.sha256`` beside it). A copy without a recorded hash, whose bytes do not match
it, that does not load or that holds another key's features is a cache miss: one line on stderr,
and the copy is overwritten by a good one (downloaded, or extracted again). LAU never runs on it.
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

from lau.checkpoint import file_sha256
from lau.data import progress
from lau.errors import BadInput
from lau.features import FEATURES_FILE, FeatureSet, cache_key, load_features, save_features
from lau.models import SplitModel
from tasks.common import IO, Context
from tasks.data import fetch
from tasks.extract import extract_sharded

if TYPE_CHECKING:
    from tasks.s3 import Storage

SHA256_FILE = FEATURES_FILE + ".sha256"  # beside the local copy
SHA256_METADATA = "sha256"  # the S3 object's user metadata


@dataclass(frozen=True)
class CachedFeatures:
    features: FeatureSet
    source: str  # "local", "s3" or "extracted"
    seconds: float


def s3_key(key: str) -> str:
    return f"features/{key}/{FEATURES_FILE}"


@task(name="features (cache or extract)", **IO)
def cached_features(ctx: Context, model: SplitModel, depth: int, data_version: str) -> CachedFeatures:
    """F_f features of the lineage's data: a cache hit costs a file read, a miss one extraction."""
    start = time.perf_counter()
    key = cache_key(model, depth, data_version)
    local = ctx.settings.feature_dir / key
    if (features := read_local(local, key)) is not None:
        return CachedFeatures(features, "local", time.perf_counter() - start)
    if (features := download(ctx.storage, key, local)) is not None:
        return CachedFeatures(features, "s3", time.perf_counter() - start)
    progress(f"[features] cache miss for {key}: extracting")
    split = fetch(ctx.storage, data_version, ctx.settings.work_dir)
    features = extract_sharded(ctx.params, model, split, data_version, cache_dir=local, depth=depth)
    digest = write_local(local, lambda tmp: save_features(features, tmp))
    ctx.storage.put_file(s3_key(key), local / FEATURES_FILE, metadata={SHA256_METADATA: digest})
    return CachedFeatures(features, "extracted", time.perf_counter() - start)


def read_local(folder: Path, key: str) -> FeatureSet | None:
    """The local copy if it matches the sha256 recorded beside it, else None (a miss)."""
    path = folder / FEATURES_FILE
    if not path.is_file():
        return None
    recorded = (folder / SHA256_FILE).read_text().strip() if (folder / SHA256_FILE).is_file() else None
    if recorded is None or file_sha256(path) != recorded:
        return discard(path, "has no recorded sha256" if recorded is None else "does not match its sha256")
    return checked_load(path, key)


def download(storage: Storage, key: str, folder: Path) -> FeatureSet | None:
    """The S3 copy, if its bytes match the sha256 in its metadata, saved as the local copy; else None."""
    found = storage.get_object(s3_key(key))
    if found is None:
        return None
    data, metadata = found
    recorded = metadata.get(SHA256_METADATA)
    if recorded is None or hashlib.sha256(data).hexdigest() != recorded:
        why = "has no recorded sha256" if recorded is None else "does not match its sha256"
        return discard(storage.uri(s3_key(key)), why)
    write_local(folder, lambda tmp: (tmp / FEATURES_FILE).write_bytes(data))
    return checked_load(folder / FEATURES_FILE, key)


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
