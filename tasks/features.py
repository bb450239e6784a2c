"""The feature cache: local disk first, then S3 ``features/<key>/``, else extract once and upload."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from prefect import task

from lau.data import class_mask, progress
from lau.features import FEATURES_FILE, FeatureSet, cache_key, load_features, save_features
from lau.models import SplitModel
from lau.pipeline import featurize
from tasks.common import IO, Context
from tasks.data import fetch


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
    features = featurize(ctx.params, model, split, data_version, depth=depth)
    save_features(features, local)
    ctx.storage.put_file(s3_key(key), local / FEATURES_FILE)
    return CachedFeatures(features, "extracted", time.perf_counter() - start)


@task(name="purge forgotten training features", **IO)
def purge_forgotten(ctx: Context, key: str, classes: tuple[int, ...]) -> bool:
    """Drop the forgotten classes' *training* features from cache ``key`` (local and S3).

    Their held-out test features stay: they are the evidence that later versions still do not
    recognise the class (the cumulative gate's ``test_forget_acc``). Idempotent; returns whether
    anything was removed.
    """
    local = ctx.settings.feature_dir / key
    if not (local / FEATURES_FILE).is_file() and not ctx.storage.get_file(s3_key(key), local / FEATURES_FILE):
        return False
    features = load_features(local)
    keep = ~class_mask(features.train_labels, classes)
    if bool(keep.all()):
        return False
    purged = replace(features, train_features=features.train_features[keep].contiguous(),
                     train_labels=features.train_labels[keep].contiguous())
    save_features(purged, local)
    ctx.storage.put_file(s3_key(key), local / FEATURES_FILE)
    return True
