"""`python -m dashboard` as an operator starts it: it answers /healthz at once, stays up and says
what is missing when S3 and MLflow are down, and refuses bad settings in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def dashboard_env(dead: int, **extra: str) -> dict[str, str]:
    """S3, MLflow and Prefect all at a port where nothing listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "LAU_", "PREFECT_"))}
    return {**env, "LAU_S3_ENDPOINT": f"http://127.0.0.1:{dead}", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{dead}",
            "PREFECT_API_URL": f"http://127.0.0.1:{dead}/api", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
            "LAU_PARAMS": str(REPO / "params.yaml"), **extra}


@pytest.fixture
def dead_services_dashboard(tmp_path):
    port, dead = free_port(), free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dashboard", "--port", str(port), "--model", "m"],
                                cwd=REPO, env=dashboard_env(dead), stdout=out, stderr=out, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", dead, proc, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def test_it_stays_up_and_says_what_is_missing_when_s3_and_mlflow_are_down(dead_services_dashboard):
    url, dead, proc, log = dead_services_dashboard
    started, status = time.monotonic(), None
    while status != 200 and time.monotonic() - started < 20:
        try:
            status = get(f"{url}/healthz", timeout=2)[0]
        except OSError:
            time.sleep(0.1)
    assert status == 200, log.read_text()[-2000:]
    assert time.monotonic() - started < 15, "healthz answers before any service is read"

    status, html = get(f"{url}/")
    assert status == 200
    assert f"S3 at http://127.0.0.1:{dead} is unreachable" in html and "requests and erasures cannot be shown" in html
    assert f"MLflow at http://127.0.0.1:{dead} failed" in html and "the lineage" in html

    status, text = get(f"{url}/metrics")
    assert status == 200
    up = {s.labels["source"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
          if s.name == "lau_dashboard_source_up" and s.labels["model"] == "m"}
    assert up == {"s3": 0.0, "mlflow": 0.0}
    assert get(f"{url}/reports/m/req-1/report.html")[0] == 502
    assert get(f"{url}/reports/m/../../etc/passwd")[0] == 404
    assert get(f"{url}/healthz")[0] == 200 and proc.poll() is None


def test_a_port_in_use_or_bad_settings_are_one_line_and_a_non_zero_exit(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "dashboard", "--port", str(port)], cwd=REPO,
                              env=dashboard_env(free_port()), capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr.strip().splitlines()[-1]

    bad = tmp_path / "params.yaml"
    bad.write_text("slo:\n  erasure_deadline_days: -1\n")
    done = subprocess.run([sys.executable, "-m", "dashboard", "--port", "0"], cwd=REPO,
                          env=dashboard_env(free_port(), LAU_PARAMS=str(bad)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"dashboard: {bad}: 'slo.erasure_deadline_days' must be > 0, got -1.0"]

    done = subprocess.run([sys.executable, "-m", "dashboard"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=dashboard_env(free_port(), LAU_DASHBOARD_PORT="80a"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["dashboard: LAU_DASHBOARD_PORT='80a': expected a port number, 0 to 65535"]
