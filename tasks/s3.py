"""S3 access for the ledger, feature cache and reports: boto3 with retries, one error type."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tasks.settings import InfraError, Settings

# botocore retries once (a blip); the Prefect tasks' retries (tasks.policy.IO) ride out outages.
# Retries layered on retries multiply: with 4 attempts here, a long S3 outage took ~70 s to exit 3.
_RETRIES = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=30)
_AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}


class Storage:
    """One bucket; keys are relative to it (``requests/...``, ``features/...``, ``reports/...``)."""

    def __init__(self, cfg: Settings):
        self.bucket = cfg.bucket
        self.endpoint = cfg.s3_endpoint
        self.client = _client(cfg.s3_endpoint, os.environ.get("AWS_ACCESS_KEY_ID"),
                              os.environ.get("AWS_SECRET_ACCESS_KEY"))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self._call("put_object", Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        return self.uri(key)

    def put_json(self, key: str, obj: Any) -> str:
        return self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode(), "application/json")

    def put_file(self, key: str, path: str | Path, content_type: str | None = None,
                 metadata: dict[str, str] | None = None) -> str:
        """Upload a file; ``metadata`` becomes the object's user metadata (x-amz-meta-*), written in
        the same request as the bytes, so the two never disagree."""
        extra = {"ContentType": content_type} if content_type else {}
        extra |= {"Metadata": metadata} if metadata else {}
        self._call("put_object", Bucket=self.bucket, Key=key, Body=Path(path).read_bytes(), **extra)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such key."""
        found = self.get_object(key)
        return None if found is None else found[0]

    def get_object(self, key: str) -> tuple[bytes, dict[str, str]] | None:
        """The object's bytes and user metadata, or None if there is no such key."""
        try:
            response = self._call("get_object", Bucket=self.bucket, Key=key)
        except _Missing:
            return None
        try:
            return response["Body"].read(), dict(response.get("Metadata") or {})
        except (BotoCoreError, OSError) as err:  # the connection dropped mid-body
            raise InfraError(f"S3 at {self.endpoint or 'AWS'}: reading {key} failed ({type(err).__name__})") from None

    def get_json(self, key: str) -> Any | None:
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def get_file(self, key: str, path: str | Path) -> bool:
        data = self.get_bytes(key)
        if data is None:
            return False
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.part")
        tmp.write_bytes(data)
        tmp.replace(path)  # never a half-written file under the final name
        return True

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Bucket=self.bucket, Key=key)
            return True
        except _Missing:
            return False

    def list(self, prefix: str) -> list[str]:
        return list(self.list_etags(prefix))

    def list_etags(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its ETag (which changes whenever the object is rewritten)."""
        found, token = {}, None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self._call("list_objects_v2", **kwargs)
            found.update({item["Key"]: item.get("ETag", "") for item in page.get("Contents", [])})
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def delete(self, key: str) -> None:
        self._call("delete_object", Bucket=self.bucket, Key=key)

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, op)(**kwargs)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise _Missing() from None
            if code in _AUTH_ERRORS:
                raise InfraError(f"S3 at {self.endpoint or 'AWS'} rejected the credentials ({code}); "
                                 "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from None
            if code == "NoSuchBucket":
                raise InfraError(f"S3 bucket '{self.bucket}' does not exist (run `make up`)") from None
            raise InfraError(f"S3 {op} failed: {code or err}") from None
        except BotoCoreError as err:
            raise InfraError(f"S3 at {self.endpoint or 'AWS'} is unreachable after retries "
                             f"({type(err).__name__})") from None


class _Missing(Exception):
    pass


@functools.lru_cache(maxsize=4)
def _client(endpoint: str | None, key_id: str | None, secret: str | None) -> Any:
    return boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret).client(
        "s3", endpoint_url=endpoint, config=_RETRIES)
