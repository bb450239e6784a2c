"""The dashboard's S3 reads (moto in memory): a page view downloads only the ledger objects whose
ETag changed, sees deletions, and its client cannot write."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from dashboard.records import request_row
from dashboard.s3 import Bucket, ReadOnlyRefused
from dashboard.settings import Settings, Slo
from tests.dashboard.conftest import ledger_object

PREFIX = "requests/m/"


@pytest.fixture
def s3(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        writer = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
        writer.create_bucket(Bucket="lau")
        settings = Settings(default_model="m", alias="champion", slo=Slo(86400.0, 0.8), bucket="lau",
                            s3_endpoint=None, s3_key_id="k", s3_secret="s", mlflow_uri=None, mlflow_ui=None,
                            prefect_ui=None)
        yield writer, Bucket(settings)


def put(writer, request_id: str, status: str) -> None:
    body = json.dumps(ledger_object(request_id, status)).encode()
    writer.put_object(Bucket="lau", Key=f"{PREFIX}{request_id}.json", Body=body)


def test_a_page_view_downloads_only_what_changed(s3):
    writer, bucket = s3
    gets = []
    bucket.client.meta.events.register("after-call.s3.GetObject", lambda **kw: gets.append(1))
    for i in range(3):
        put(writer, f"r{i}", "pending")
    first = bucket.json_objects(PREFIX, request_row)
    assert {r.request_id for r in first.values()} == {"r0", "r1", "r2"} and len(gets) == 3
    bucket.json_objects(PREFIX, request_row)
    assert len(gets) == 3, "nothing changed: no object downloaded again"
    put(writer, "r1", "registered")
    writer.delete_object(Bucket="lau", Key=f"{PREFIX}r2.json")
    third = bucket.json_objects(PREFIX, request_row)
    assert len(gets) == 4, "only the changed object is downloaded"
    assert {r.request_id: r.status for r in third.values()} == {"r0": "pending", "r1": "registered"}


def test_an_unreadable_ledger_object_is_skipped_not_fatal(s3):
    writer, bucket = s3
    put(writer, "good", "pending")
    writer.put_object(Bucket="lau", Key=f"{PREFIX}broken.json", Body=b"{not json")
    assert [r.request_id for r in bucket.json_objects(PREFIX, request_row).values()] == ["good"]


def test_the_dashboards_client_refuses_to_write(s3):
    writer, bucket = s3
    put(writer, "r0", "pending")
    with pytest.raises(ReadOnlyRefused):
        bucket.client.put_object(Bucket="lau", Key=f"{PREFIX}r0.json", Body=b"{}")
    with pytest.raises(ReadOnlyRefused):
        bucket.client.delete_object(Bucket="lau", Key=f"{PREFIX}r0.json")
    assert json.loads(writer.get_object(Bucket="lau", Key=f"{PREFIX}r0.json")["Body"].read())["status"] == "pending"
