"""Health checks: each service answers, to our credentials only."""

from __future__ import annotations

import base64
import functools
import json
import urllib.error
import urllib.request
from typing import Any

from infra.stack.config import DEFAULT_WORK_POOL, REGION, Config
from infra.stack.credentials import MLFLOW_ADMIN
from infra.stack.services import WORKER_NAME, Service

MLFLOW_PROBE = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
PREFECT_PROBE = "/api/admin/version"


class NotHealthy(Exception):
    """A health check did not pass (yet); the message says why."""


class CredentialsRejected(NotHealthy):
    """The service answers, but not to our credentials (or to anyone: it runs without auth)."""


def basic_auth(user_and_password: str) -> str:
    return "Basic " + base64.b64encode(user_and_password.encode()).decode()


def http_call(url: str, method: str = "GET", *, auth: str | None = None, body: Any = None,
              timeout: float = 5) -> tuple[int, bytes]:
    """(status, body) of one request on loopback (no proxy); 4xx and 5xx are answers too.
    ``auth`` is "user:password" for HTTP basic auth. Raises NotHealthy when nothing answers."""
    headers = {"Authorization": basic_auth(auth)} if auth else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        raise NotHealthy(f"{url.split('?')[0]}: {getattr(error, 'reason', error)}") from None


def check_health(service: Service, cfg: Config) -> None:
    """Return if the service answers as it should, else raise NotHealthy saying why."""
    if service.name == "s3":
        check_s3(cfg)
    elif service.name == "mlflow":
        check_ok(f"{cfg.url('mlflow')}/health")
        check_guarded(f"{cfg.url('mlflow')}{MLFLOW_PROBE}", "MLflow",
                      f"{MLFLOW_ADMIN}:{cfg.creds.mlflow_admin_password}")
    elif service.name == "worker":
        check_worker(cfg)
    elif service.name == "dashboard":
        check_ok(f"{cfg.url('dashboard')}/healthz")
    else:
        check_ok(f"{cfg.url('prefect')}/api/health")
        check_guarded(f"{cfg.url('prefect')}{PREFECT_PROBE}", "Prefect", cfg.creds.prefect_auth_string)


def check_ok(url: str) -> None:
    status, _ = http_call(url, timeout=3)
    if status != 200:
        raise NotHealthy(f"HTTP {status} from {url}")


def check_guarded(url: str, title: str, auth: str) -> None:
    """The API refuses a request without credentials (401) and answers ours (200): MLflow's admin
    (created at its first start, before it listens), Prefect's auth string."""
    anonymous, _ = http_call(url, timeout=3)
    if anonymous != 401:
        raise CredentialsRejected(f"{title} answers HTTP {anonymous} without credentials: "
                                  "it runs without authentication")
    status, _ = http_call(url, auth=auth, timeout=3)
    if status == 401:
        raise CredentialsRejected(f"{title} rejects the credentials in .stack/credentials")
    if status != 200:
        raise NotHealthy(f"HTTP {status} from {url.split('?')[0]}")


def check_worker(cfg: Config) -> None:
    """The Prefect server lists our worker as ONLINE in its pool (it heartbeats every 30 s)."""
    pool = cfg.work_pool or DEFAULT_WORK_POOL
    url = f"{cfg.url('prefect')}/api/work_pools/{pool}/workers/filter"
    status, body = http_call(url, "POST", auth=cfg.creds.prefect_auth_string, body={}, timeout=3)
    try:
        workers = json.loads(body) if status == 200 else []
    except ValueError:
        workers = []
    if status != 200:
        raise NotHealthy(f"pool {pool}: HTTP {status}")
    if not any(w.get("name") == WORKER_NAME and w.get("status") == "ONLINE" for w in workers):
        raise NotHealthy(f"worker {WORKER_NAME} is not online in pool {pool}")


def check_s3(cfg: Config) -> None:
    """The bucket answers to our credentials (it is created when missing), and the viewer's
    read-only identity can list it."""
    from botocore.exceptions import BotoCoreError, ClientError

    for viewer in (False, True):
        client = s3_client(cfg, viewer=viewer)
        try:
            client.head_bucket(Bucket=cfg.bucket)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchBucket") and not viewer:
                client.create_bucket(Bucket=cfg.bucket)
                continue
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                who = "the viewer's" if viewer else "the"
                raise CredentialsRejected(f"S3 rejected {who} credentials ({code})") from None
            raise NotHealthy(f"S3 answered {code}") from None
        except (BotoCoreError, OSError) as error:
            raise NotHealthy(f"S3: {type(error).__name__}") from None


@functools.lru_cache(maxsize=8)
def s3_client(cfg: Config, *, viewer: bool = False) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    c = cfg.creds
    return boto3.client(
        "s3",
        endpoint_url=cfg.url("s3"),
        region_name=REGION,
        aws_access_key_id=c.viewer_access_key if viewer else c.access_key,
        aws_secret_access_key=c.viewer_secret_key if viewer else c.secret_key,
        config=BotoConfig(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}),
    )
