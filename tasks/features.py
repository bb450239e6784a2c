"""The feature cache: local disk first, then S3 ``features/<key>/``, else extract once and upload."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from prefect import task

from lau.data import progress
from lau.features import FEATURES_FILE, FeatureSet, cache_key, load_features, save_features
from lau.models import SplitModel
from tasks.common import IO, Context
from tasks.data import fetch
from tasks.extract import extract_sharded


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
    if (local / FEATURES_FILE).is_file():
        return CachedFeatures(load_features(local), "local", time.perf_counter() - start)
    if ctx.storage.get_file(s3_key(key), local / FEATURES_FILE):
        return CachedFeatures(load_features(local), "s3", time.perf_counter() - start)
    progress(f"[features] cache miss for {key}: extracting")
    split = fetch(ctx.storage, data_version, ctx.settings.work_dir)
    features = extract_sharded(ctx.params, model, split, data_version, cache_dir=local, depth=depth)
    save_features(features, local)
    ctx.storage.put_file(s3_key(key), local / FEATURES_FILE)
    return CachedFeatures(features, "extracted", time.perf_counter() - start)


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
