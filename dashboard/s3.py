"""Read-only S3 for the dashboard: the ledger and the erasure record, cached by key and ETag.

One page view lists the model's prefix (one request per 1,000 keys, ETags included) and fetches only
the objects whose ETag changed since the last view: with 1,000 requests in the ledger a page view
costs one LIST, not 1,000 GETs. The client refuses every operation but List/Get/Head, so nothing in
the dashboard can write to the bucket whatever its credentials allow.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dashboard.settings import Settings

FETCH_THREADS = 16
READ_OPERATIONS = frozenset({"ListObjectsV2", "GetObject", "HeadObject"})
# One quick retry, short timeouts: a page that waits 30 s on a dead S3 is a page nobody reads.
_CONFIG = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=10,
                 max_pool_connections=FETCH_THREADS)


_MEANING = {"NoSuchBucket": "the bucket does not exist", "AccessDenied": "access denied",
            "InvalidAccessKeyId": "the credentials were rejected",
            "SignatureDoesNotMatch": "the credentials were rejected"}


class SourceDown(RuntimeError):
    """A service the dashboard reads is unreachable or refused it; the message says which and why."""


class ReadOnlyRefused(RuntimeError):
    """Something tried a writing S3 operation through the dashboard's client."""


def _refuse_writes(model: Any, **_: Any) -> None:
    if model.name not in READ_OPERATIONS:
        raise ReadOnlyRefused(f"the dashboard is read-only: S3 {model.name} refused")


def read_only_client(settings: Settings) -> Any:
    """A boto3 S3 client that can only list and read."""
    core = botocore.session.get_session()
    # LastModified is never read here, and botocore's timestamp parser (dateutil) was most of the CPU
    # of a 1,000-key LIST in a profile. Timestamps stay strings in this session's responses.
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    client = boto3.session.Session(aws_access_key_id=settings.s3_key_id, aws_secret_access_key=settings.s3_secret,
                                   botocore_session=core).client(
        "s3", endpoint_url=settings.s3_endpoint, config=_CONFIG, region_name="us-east-1")
    client.meta.events.register("before-call.s3", _refuse_writes)
    return client


class Bucket:
    """The bucket, read through ``read_only_client``, with an ETag cache of decoded JSON objects."""

    def __init__(self, settings: Settings, client: Any | None = None):
        self.name = settings.bucket
        self.endpoint = settings.s3_endpoint or "AWS"
        self.client = client or read_only_client(settings)
        self._cache: dict[str, tuple[str, Any]] = {}  # key -> (ETag, decoded value)
        self._lock = threading.Lock()

    def json_objects(self, prefix: str, decode: Callable[[dict], Any] = lambda d: d) -> dict[str, Any]:
        """Every ``*.json`` object under ``prefix`` as ``decode(parsed JSON)``, by key; only objects
        whose ETag changed since the last call are downloaded. Unreadable objects are skipped."""
        listed = {key: etag for key, etag in self._list(prefix) if key.endswith(".json")}
        with self._lock:
            stale = [k for k, etag in listed.items() if self._cache.get(k, ("",))[0] != etag]
        def fetch(key: str) -> tuple[str, Any] | None:
            body = self.get(key)
            try:
                return (listed[key], decode(json.loads(body))) if body is not None else None
            except (ValueError, TypeError, KeyError):
                return (listed[key], None)

        if len(stale) > 1:  # a first view of 1,000 requests: 16 GETs at a time, not one after the other
            with ThreadPoolExecutor(FETCH_THREADS) as pool:
                fetched = dict(zip(stale, pool.map(fetch, stale)))
        else:
            fetched = {key: fetch(key) for key in stale}
        with self._lock:
            for key, entry in fetched.items():
                if entry is not None:
                    self._cache[key] = entry
            for key in [k for k in self._cache if k.startswith(prefix) and k not in listed]:
                del self._cache[key]  # deleted from the bucket
            return {k: self._cache[k][1] for k in listed if k in self._cache and self._cache[k][1] is not None}

    def children(self, prefix: str) -> list[str]:
        """The 'folder' names right under ``prefix`` (e.g. the models that have a ledger)."""
        names, token = [], None
        while True:
            page = self._call("list_objects_v2", Bucket=self.name, Prefix=prefix, Delimiter="/",
                              **({"ContinuationToken": token} if token else {}))
            names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return names
            token = page["NextContinuationToken"]

    def get(self, key: str) -> bytes | None:
        """An object's bytes, or None when there is no such key."""
        try:
            response = self.client.get_object(Bucket=self.name, Key=key)
            return response["Body"].read()
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise _down(self.endpoint, err) from None
        except (BotoCoreError, OSError) as err:
            raise _down(self.endpoint, err) from None

    def _list(self, prefix: str) -> list[tuple[str, str]]:
        found, token = [], None
        while True:
            page = self._call("list_objects_v2", Bucket=self.name, Prefix=prefix,
                              **({"ContinuationToken": token} if token else {}))
            found += [(item["Key"], item.get("ETag", "")) for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, op)(**kwargs)
        except (ClientError, BotoCoreError, OSError) as err:
            raise _down(self.endpoint, err) from None


def _down(endpoint: str, err: Exception) -> SourceDown:
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        return SourceDown(f"S3 at {endpoint}: {_MEANING.get(code, code or 'error')}")
    return SourceDown(f"S3 at {endpoint} is unreachable ({type(err).__name__})")
