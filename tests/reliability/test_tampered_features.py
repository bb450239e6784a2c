"""Tampered feature caches: the cached features LAU and the gate run on are changed, on S3 and on the
local disk, between two deletions. The sha256 recorded when the cache was written (S3 object
metadata, a file beside the local copy) no longer matches, so the second deletion says so in one
line per copy, extracts the features again, and still forgets its class with forget accuracy 0.

The tampering is the one that would hurt: a valid safetensors file, under the same cache key, whose
labels no longer mark the class to forget (LAU would find nothing to forget, the gate nothing to
measure), with the S3 object's metadata and the local hash file left as they were.

The tests run in file order on one model.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from reliability_harness import bucket, champion, check_invariants, needs_stack, s3_client

pytestmark = [needs_stack, pytest.mark.reliability, pytest.mark.slow]

MISS = r"\[features\] cached copy (\S+) (has no recorded sha256|does not match its sha256): treated as a cache miss"


@pytest.fixture(scope="module")
def model(copy_of_reference) -> str:  # noqa: ANN001
    return copy_of_reference("rel-features")


def relabelled(data: bytes, klass: int) -> bytes:
    """The cache file with ``klass``'s train and test images labelled as the next class."""
    from lau.features import load_features, save_features

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "in.safetensors").write_bytes(data)
        features = load_features(Path(tmp) / "in.safetensors")
        other = (klass + 1) % 10
        features = replace(features, train_labels=features.train_labels.masked_fill(features.train_labels == klass, other),
                           test_labels=features.test_labels.masked_fill(features.test_labels == klass, other))
        return save_features(features, Path(tmp) / "out").read_bytes()


def cache_copies(workspace, model: str) -> tuple[str, Path]:  # noqa: ANN001
    """The S3 key and the local path of the model's feature cache."""
    from lau.features import FEATURES_FILE

    key = champion(model).tags["lau.feature_cache_key"]
    return f"features/{key}/{FEATURES_FILE}", workspace.work / "features" / key / FEATURES_FILE


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def forget(workspace, model: str, klass: int, promised: dict) -> dict:  # noqa: ANN001
    run = workspace.lau("forget", "--classes", str(klass), "--json", model=model)
    assert run.code == 0, run.describe()
    summary = run.json()
    assert summary["status"] == "registered", summary
    assert summary["metrics"]["forget_acc"] == 0 and summary["metrics"]["test_forget_acc"] == 0, summary["metrics"]
    promised[summary["request_id"]] = [klass]
    return {**summary, "stderr": run.stderr}


def test_tampered_features_on_s3_and_disk_are_extracted_again(workspace, model: str, promised: dict) -> None:  # noqa: ANN001
    forget(workspace, model, 3, promised)
    key, local = cache_copies(workspace, model)
    s3 = s3_client()
    stored = s3.get_object(Bucket=bucket(), Key=key)
    good, metadata = stored["Body"].read(), stored["Metadata"]
    assert metadata.get("sha256") == sha256(good), "the cache on S3 carries no sha256 of its bytes"
    assert local.read_bytes() == good
    tampered = relabelled(good, 5)
    s3.put_object(Bucket=bucket(), Key=key, Body=tampered, Metadata=metadata)  # the recorded hash kept
    local.write_bytes(tampered)

    summary = forget(workspace, model, 5, promised)

    assert summary["timings"]["features_source"] == "extracted", summary["timings"]
    found = [m.group(1) for m in re.finditer(MISS, summary["stderr"])]
    assert found == [str(local), f"s3://{bucket()}/{key}"], summary["stderr"][-3000:]
    stored = s3.get_object(Bucket=bucket(), Key=key)
    restored = stored["Body"].read()
    assert restored != tampered and stored["Metadata"]["sha256"] == sha256(restored)
    assert local.read_bytes() == restored
    assert local.with_name(local.name + ".sha256").read_text().strip() == sha256(restored)
    check_invariants(model, promised)


def test_a_tampered_local_copy_is_replaced_from_s3(workspace, model: str, promised: dict) -> None:  # noqa: ANN001
    key, local = cache_copies(workspace, model)
    local.write_bytes(relabelled(local.read_bytes(), 1))

    summary = forget(workspace, model, 1, promised)

    assert summary["timings"]["features_source"] == "s3", summary["timings"]
    assert f"cached copy {local} does not match its sha256" in summary["stderr"]
    assert local.read_bytes() == s3_client().get_object(Bucket=bucket(), Key=key)["Body"].read()
    check_invariants(model, promised)


def test_data_and_hash_rewritten_together_are_caught_by_the_registry_hash(workspace, model: str,  # noqa: ANN001
                                                                          promised: dict) -> None:
    """Someone who can write the bucket and the disk rewrites the features *and* their recorded
    hashes. Only the registry's lau.feature_cache_sha256 of the parent version tells."""
    key, local = cache_copies(workspace, model)
    s3 = s3_client()
    good = s3.get_object(Bucket=bucket(), Key=key)["Body"].read()
    assert champion(model).tags["lau.feature_cache_sha256"] == sha256(good)
    forged = relabelled(good, 7)
    s3.put_object(Bucket=bucket(), Key=key, Body=forged, Metadata={"sha256": sha256(forged)})
    local.write_bytes(forged)
    local.with_name(local.name + ".sha256").write_text(sha256(forged) + "\n")

    summary = forget(workspace, model, 7, promised)

    assert summary["timings"]["features_source"] == "extracted", summary["timings"]
    assert summary["stderr"].count("is not the copy the registry recorded") == 2, summary["stderr"][-3000:]
    assert champion(model).tags["lau.feature_cache_sha256"] == sha256(local.read_bytes()) != sha256(forged)
    check_invariants(model, promised)
