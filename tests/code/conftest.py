"""Fixtures of the orchestration's unit tests: an in-process S3 (moto) behind tasks.s3.Storage.

The real S3 path (SeaweedFS through the same Storage class) is tested in tests/integration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[object]:
    """A tasks.s3.Storage over moto's in-memory S3, with an empty bucket `lau-test`."""
    import boto3
    from moto import mock_aws

    from tasks import s3
    from tasks.settings import Settings

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "LAU_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)  # the local stack's S3 is not moto's
    s3._client.cache_clear()
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="lau-test")
        yield s3.Storage(Settings(tmp_path / "params.yaml", "lau-test", None, tmp_path / "work"))
    s3._client.cache_clear()
