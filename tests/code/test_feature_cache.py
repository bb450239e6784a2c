"""The feature cache's integrity check (tasks.features): a copy is read only when its bytes match the
sha256 recorded when it was written, beside the local file or in the S3 object's metadata. The
real S3 path, through two deletions, is tests/reliability/test_tampered_features.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from lau.features import FEATURES_FILE, FeatureSet, save_features
from tasks.features import SHA256_FILE, SHA256_METADATA, download, read_local, s3_key, write_local

KEY = "0123456789abcdef0123456789abcdef"


class FakeStorage:
    """The two calls of tasks.s3.Storage that ``download`` makes, over a dict: key -> (bytes, metadata)."""

    def __init__(self, objects: dict[str, tuple[bytes, dict[str, str]]]):
        self.objects = objects

    def get_object(self, key: str) -> tuple[bytes, dict[str, str]] | None:
        return self.objects.get(key)

    def uri(self, key: str) -> str:
        return f"s3://test/{key}"


def feature_set(key: str = KEY) -> FeatureSet:
    generator = torch.Generator().manual_seed(0)
    return FeatureSet(key, 1, torch.rand(6, 4, generator=generator), torch.arange(6) % 3,
                      torch.rand(3, 4, generator=generator), torch.arange(3))


def cache_file(tmp_path: Path, key: str = KEY) -> bytes:
    """The bytes of a cache file for ``key``, as the cache writes it."""
    return save_features(feature_set(key), tmp_path / "source" / key).read_bytes()


def flip_last_byte(data: bytes) -> bytes:
    """One bit of a tensor's bytes changed: still a valid safetensors file, other numbers."""
    return data[:-1] + bytes([data[-1] ^ 1])


def assert_same(found: tuple[FeatureSet, str] | None, expected: FeatureSet) -> None:
    """``found`` is what read_local / download return: the features and their file's sha256."""
    assert found is not None
    features, digest = found
    assert len(digest) == 64 and features.key == expected.key
    assert torch.equal(features.train_features, expected.train_features)
    assert torch.equal(features.test_labels, expected.test_labels)


def test_a_local_copy_is_read_when_its_hash_matches(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / KEY
    digest = write_local(folder, lambda tmp: save_features(feature_set(), tmp))
    assert (folder / SHA256_FILE).read_text().strip() == digest
    assert digest == hashlib.sha256((folder / FEATURES_FILE).read_bytes()).hexdigest()
    assert_same(read_local(folder, KEY), feature_set())
    assert sorted(p.name for p in folder.iterdir()) == [FEATURES_FILE, SHA256_FILE], "a temporary file is left"


@pytest.mark.parametrize("damage", ["one bit", "truncated", "no recorded hash"])
def test_a_damaged_local_copy_is_a_miss_with_one_line(damage: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "cache" / KEY
    write_local(folder, lambda tmp: save_features(feature_set(), tmp))
    path = folder / FEATURES_FILE
    if damage == "one bit":
        path.write_bytes(flip_last_byte(path.read_bytes()))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        (folder / SHA256_FILE).unlink()
    assert read_local(folder, KEY) is None
    (line,) = capsys.readouterr().err.splitlines()
    assert str(path) in line and "treated as a cache miss" in line


def test_a_good_s3_copy_becomes_the_checked_local_copy(tmp_path: Path) -> None:
    data = cache_file(tmp_path)
    storage = FakeStorage({s3_key(KEY): (data, {SHA256_METADATA: hashlib.sha256(data).hexdigest()})})
    folder = tmp_path / "cache" / KEY
    assert_same(download(storage, KEY, folder), feature_set())
    assert (folder / FEATURES_FILE).read_bytes() == data
    assert_same(read_local(folder, KEY), feature_set())


@pytest.mark.parametrize("damage", ["one bit, metadata kept", "no metadata", "another key's features"])
def test_a_damaged_s3_copy_is_a_miss_with_one_line(damage: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    data = cache_file(tmp_path)
    recorded = {SHA256_METADATA: hashlib.sha256(data).hexdigest()}
    if damage == "one bit, metadata kept":
        data = flip_last_byte(data)
    elif damage == "no metadata":
        recorded = {}
    else:  # a sound cache file, with its true hash, copied under the wrong key
        data = cache_file(tmp_path, "f" * 32)
        recorded = {SHA256_METADATA: hashlib.sha256(data).hexdigest()}
    folder = tmp_path / "cache" / KEY
    assert download(FakeStorage({s3_key(KEY): (data, recorded)}), KEY, folder) is None
    (line,) = capsys.readouterr().err.splitlines()
    assert "treated as a cache miss" in line
    if damage == "another key's features":
        assert "holds the features of cache key" in line
    else:
        assert s3_key(KEY) in line
        assert not (folder / FEATURES_FILE).exists(), "bytes that failed their hash were saved locally"


def test_no_s3_copy_is_a_plain_miss(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert download(FakeStorage({}), KEY, tmp_path / KEY) is None
    assert read_local(tmp_path / KEY, KEY) is None
    assert capsys.readouterr().err == ""


def test_a_copy_whose_own_hash_was_rewritten_is_refused_by_the_registry_hash(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Data and hash rewritten together (someone with write access to the bucket and the disk):
    only the sha256 the registry recorded for the lineage (``expected``) tells them apart."""
    good = cache_file(tmp_path)
    forged = flip_last_byte(good)
    registry_hash = hashlib.sha256(good).hexdigest()
    storage = FakeStorage({s3_key(KEY): (forged, {SHA256_METADATA: hashlib.sha256(forged).hexdigest()})})
    folder = tmp_path / "cache" / KEY
    write_local(folder, lambda tmp: (tmp / FEATURES_FILE).write_bytes(forged))  # hash file rewritten too

    assert read_local(folder, KEY) is not None and download(storage, KEY, tmp_path / "other") is not None
    capsys.readouterr()
    assert read_local(folder, KEY, registry_hash) is None
    assert download(storage, KEY, folder, registry_hash) is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all("is not the copy the registry recorded" in line for line in lines)
    write_local(folder, lambda tmp: (tmp / FEATURES_FILE).write_bytes(good))
    found = read_local(folder, KEY, registry_hash)
    assert_same(found, feature_set())
    assert found[1] == registry_hash
