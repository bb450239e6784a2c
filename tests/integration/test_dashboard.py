"""The ops dashboard against the real stack, read in a real headless Chromium.

One small model (mnist5k, 100 images per class, 2 epochs): trained, one deletion registered, one
rejected by a strict gate (--max-retain-drop -100), one request left pending. Then the page, as the
browser renders it, and /metrics, as Prometheus parses it, must tell the same story as the ledger.
``LAU_SAVE_SCREENSHOT=1`` also writes the screenshot to docs/dashboard.png.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import warm_lau
from tests.dashboard.browser import CHROMIUM, Browser
from tests.integration.conftest import LAU, REPO, make_workspace, requires_stack

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                    reason="needs Debian's chromium: make chromium")
pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_stack, needs_chromium]


def _start(ws, *args: str) -> subprocess.Popen:
    return warm_lau.popen([LAU, *args, "--model", ws.model], env=ws.env(), cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, expect: int) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == expect, err[-2000:]
    return json.loads(out)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Train, then the two deletions and the pending request at once (each `lau` mostly starts up;
    the model's lock runs the deletions one after the other)."""
    ws = make_workspace(tmp_path_factory.mktemp("dashboard"), "it-dash", data={"max_per_class": 100},
                        train={"epochs": 2})
    trained = ws.lau("train", "--json")
    assert trained.code == 0, trained.stderr[-2000:]
    registered = _start(ws, "forget", "--classes", "3", "--max-retain-drop", "100", "--json")
    rejected = _start(ws, "forget", "--classes", "5", "--max-retain-drop", "-100", "--json")
    pending = _start(ws, "request", "add", "--classes", "7", "--json")
    return ws, {"registered": _finish(registered, 0), "rejected": _finish(rejected, 1),
                "pending": _finish(pending, 0)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard(scenario, tmp_path_factory):
    """`python -m dashboard` for the scenario's model; its URL. Stopped (with its group) at the end."""
    ws, _ = scenario
    port = _free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dashboard", "--port", str(port), "--model", ws.model],
                                env=ws.env(), cwd=REPO, stdout=out, stderr=out, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def _get(url: str, timeout: float = 20) -> tuple[int, bytes]:
    """GET as a browser following a link does (Prefect's UI answers deep links only to text/html).
    /metrics reads every model of the stack (the whole suite's, on a busy machine): its callers wait
    longer; its latency is a benchmark's business, its values this module's."""
    request = urllib.request.Request(url, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password and url.startswith(os.environ.get("MLFLOW_TRACKING_URI", "-")):
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def test_page_shows_requests_verdicts_links_lineage_and_charts(scenario, dashboard, tmp_path):
    ws, made = scenario
    pending, registered, rejected = made["pending"], made["registered"], made["rejected"]
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"{dashboard}/")
        text = browser.evaluate("document.body.innerText")
        age = browser.evaluate(f"""(() => {{ const c = document.querySelector('#open #req-{pending["request_id"]} td.age');
            return c && [Number(c.dataset.ageSeconds), c.className, getComputedStyle(c).backgroundColor, c.innerText]; }})()""")
        rows = {r: browser.evaluate(f"""(() => {{ const row = document.querySelector('#recent #req-{r}');
            return row && {{status: row.children[1].innerText, verdict: row.querySelector('.verdict').innerText,
                            links: [...row.querySelectorAll('a')].map(a => [a.innerText, a.href])}}; }})()""")
                for r in (registered["request_id"], rejected["request_id"])}
        lineage = browser.evaluate("[...document.querySelectorAll('#lineage tr')].slice(1)"
                                   ".map(tr => [...tr.children].map(td => td.innerText))")
        charts = browser.evaluate("""[...document.querySelectorAll('svg.chart')].map(s => ({name: s.dataset.chart,
            width: s.getBoundingClientRect().width, dots: s.querySelectorAll('circle').length,
            erased: [...s.querySelectorAll('rect.erased')].map(r => r.textContent), text: s.textContent}))""")
        shot = browser.screenshot(tmp_path / "dashboard.png")
        pgid = browser.proc.pid
    assert not _group_alive(pgid), "the browser outlived its with-block"

    assert ws.model in text and "Open requests" in text
    submitted = dt.datetime.fromisoformat(next(r for r in _ledger(ws.model) if r["status"] == "pending")["submitted_at"])
    assert age is not None, text[:2000]
    assert abs(age[0] - (dt.datetime.now(dt.UTC) - submitted).total_seconds()) < 120
    assert "slo-ok" in age[1] and age[2] == "rgb(227, 244, 228)" and "of the deadline" in age[3]

    ok, no = rows[registered["request_id"]], rows[rejected["request_id"]]
    assert ok["status"] == "registered" and ok["verdict"] == "passed"
    assert no["status"] == "rejected" and no["verdict"].startswith("failed: retain_drop")
    for row, version in ((ok, registered["version"]), (no, rejected["parent_version"])):
        labels = [label for label, _ in row["links"]]
        assert "audit report" in labels and any(label.startswith(f"MLflow v{version}") for label in labels), labels
        for label, href in row["links"]:
            status, body = _get(href)
            assert status == 200, (label, href)
            if label == "audit report":
                assert (registered if row is ok else rejected)["request_id"].encode() in body

    assert [cells[1] for cells in lineage] == ["train", "lau"], lineage
    assert lineage[-1][0] == f"v{registered['version']} (champion)" and lineage[-1][2] == "3"
    assert lineage[-1][5].endswith("pt") and lineage[-1][4].endswith("%")

    by_name = {c["name"]: c for c in charts}
    assert set(by_name) == {"time-to-erasure", "per-class-accuracy", "rejections"}
    assert all(c["width"] > 100 for c in charts)
    assert by_name["time-to-erasure"]["dots"] == 1
    assert len(by_name["per-class-accuracy"]["erased"]) == 1 and "class 3" in by_name["per-class-accuracy"]["erased"][0]
    assert "retain_drop" in by_name["rejections"]["text"]

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("LAU_SAVE_SCREENSHOT") == "1":
        (REPO / "docs" / "dashboard.png").write_bytes(shot.read_bytes())


def _ledger(model: str) -> list[dict]:
    client = boto3.client("s3", endpoint_url=os.environ["LAU_S3_ENDPOINT"])
    bucket = os.environ["LAU_BUCKET"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"requests/{model}/").get("Contents", [])]
    return [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]


def test_metrics_parse_and_match_the_ledger(scenario, dashboard):
    ws, made = scenario
    before = dt.datetime.now(dt.UTC)
    status, body = _get(f"{dashboard}/metrics", timeout=120)
    after = dt.datetime.now(dt.UTC)
    assert status == 200
    samples = [s for family in text_string_to_metric_families(body.decode()) for s in family.samples
               if s.labels.get("model") == ws.model]
    value = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "model"))): s.value for s in samples}
    ledger = _ledger(ws.model)
    for status_name in ("pending", "running", "registered", "rejected", "failed"):
        expected = sum(1 for r in ledger if r["status"] == status_name)
        assert value[("lau_requests", (("status", status_name),))] == expected, status_name
    assert value[("lau_requests", (("status", "pending"),))] == 1
    submitted = dt.datetime.fromisoformat(next(r for r in ledger if r["status"] == "pending")["submitted_at"])
    oldest = value[("lau_oldest_open_request_age_seconds", ())]  # the age when the page was scraped
    assert (before - submitted).total_seconds() - 2 <= oldest <= (after - submitted).total_seconds() + 2
    rejections = {labels: v for (name, labels), v in value.items() if name == "lau_gate_rejections_total"}
    assert rejections == {(("check", "retain_drop"),): 1.0}
    assert value[("lau_erasure_duration_seconds_count", ())] == 1
    done = next(r for r in ledger if r["status"] == "registered")
    took = (dt.datetime.fromisoformat(done["updated_at"]) - dt.datetime.fromisoformat(done["submitted_at"])).total_seconds()
    assert abs(value[("lau_erasure_duration_seconds_sum", ())] - took) < 1
    assert value[("lau_champion_version", ())] == int(made["registered"]["version"])
    assert value[("lau_champion_lineage_ok", ())] == 1
    assert value[("lau_erased_classes", ())] == 1


def _state(model: str) -> dict:
    """Every S3 object of the model (key -> ETag) and every registry fact about it."""
    from mlflow.tracking import MlflowClient

    client = boto3.client("s3", endpoint_url=os.environ["LAU_S3_ENDPOINT"])
    objects = {}
    for prefix in (f"requests/{model}/", f"erasures/{model}/", f"reports/{model}/"):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=os.environ["LAU_BUCKET"], Prefix=prefix)
        objects |= {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}
    mlflow = MlflowClient()
    registered = mlflow.get_registered_model(model)
    versions = {v.version: (v.last_updated_timestamp, dict(v.tags)) for v in
                mlflow.search_model_versions(f"name = '{model}'")}
    return {"objects": objects, "versions": versions, "aliases": dict(registered.aliases),
            "updated": registered.last_updated_timestamp}


def test_dashboard_writes_nothing(scenario, dashboard):
    ws, made = scenario
    before = _state(ws.model)
    paths = ["/", f"/models/{ws.model}", f"/?model={ws.model}", "/metrics", "/healthz",
             f"/reports/{ws.model}/{made['rejected']['request_id']}/report.html"]
    for path in paths:
        assert _get(dashboard + path, timeout=120)[0] == 200, path
    time.sleep(2.5)  # past the views' cache: the second round reads the sources again
    for path in paths:
        assert _get(dashboard + path, timeout=120)[0] == 200, path
    assert _state(ws.model) == before
