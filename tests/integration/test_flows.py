"""The product end to end against the real stack: train, forget, reject, process, schedule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import boto3
import pytest

from tests import warm_lau
from tests.integration.conftest import LAU, REPO, make_workspace, requires_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_stack]


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """A model trained once (3 epochs on 200 images per class of mnist5k) and a first deletion of class 3."""
    ws = make_workspace(tmp_path_factory.mktemp("flows"), "it-flows", train={"epochs": 3}, data={"max_per_class": 200})
    trained = ws.lau("train", "--json")
    assert trained.code == 0, trained.stderr[-2000:]
    first = ws.lau("forget", "--classes", "3", "--reason", "test", "--json")
    assert first.code == 0, first.stderr[-2000:]
    return ws, trained.json(), first.json()


def s3_keys(prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=os.environ["LAU_S3_ENDPOINT"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=os.environ["LAU_BUCKET"], Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def champion(ws) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_model_version_by_alias(ws.model, "champion").version


def versions(ws) -> list[str]:
    from mlflow.tracking import MlflowClient

    return sorted(v.version for v in MlflowClient().search_model_versions(f"name = '{ws.model}'"))


def test_forget_registers_promotes_and_proves(lineage):
    ws, trained, result = lineage
    assert trained["version"] == "1"
    assert result["status"] == "registered" and result["version"] == "2" and result["parent_version"] == "1"
    assert champion(ws) == "2"
    metrics = result["metrics"]
    assert metrics["forget_acc"] == 0 and metrics["test_forget_acc"] == 0
    assert metrics["retain_drop"] <= 1.0
    assert {c["name"] for c in result["gate"]["checks"]} >= {"forget_acc", "test_forget_acc", "retain_drop"}
    assert all(c["passed"] for c in result["gate"]["checks"])
    assert set(result) >= {"request_id", "status", "model", "parent_version", "version", "forgotten_classes",
                           "gate", "metrics", "timings", "report_uri"}
    reports = s3_keys(f"reports/{ws.model}/{result['request_id']}/")
    assert {k.rsplit("/", 1)[1] for k in reports} >= {"report.html", "report.md", "confusion_test.png",
                                                       "per_class_test.png"}
    artifacts = s3_keys("mlflow/")
    assert any(k.endswith("checkpoint/model.safetensors") for k in artifacts)
    assert any(k.endswith("model.pt2") for k in artifacts)
    assert any("/plots/" in k and k.endswith(".png") for k in artifacts)
    assert ws.read_params()["data"]["excluded_classes"] == []  # the erasure lives in the record, not here
    erasures = ws.lau("erasures", "--json").json()
    assert [(e["class_id"], e["version"]) for e in erasures] == [(3, "2")]
    # champion_at (what bench.warm times): after the request was filed, before its final record
    record = ws.lau("request", "show", result["request_id"], "--json").json()
    champion_at = datetime.fromisoformat(result["timings"]["champion_at"])
    assert datetime.fromisoformat(record["submitted_at"]) < champion_at < datetime.fromisoformat(record["history"][-1]["at"])


def test_plain_mlflow_client_never_predicts_forgotten_class(lineage):
    ws, _, _ = lineage
    script = f"""
import mlflow, torch, numpy as np
from lau.config import load_params
from lau.data import prepare
model = mlflow.pytorch.load_model("models:/{ws.model}@champion")
params = load_params("{REPO / 'params.yaml'}")
split = prepare(params.data)
pred = model(split.test_images.float() / 255).argmax(1)
print((pred == 3).sum().item(), (pred == split.test_labels).float().mean().item())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=os.environ, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    predicted_three, accuracy = done.stdout.split()
    assert int(predicted_three) == 0
    assert float(accuracy) > 0.8  # still a working classifier for the other nine classes


def test_second_deletion_is_cumulative_and_uses_the_cache(lineage):
    ws, _, first = lineage
    second = ws.lau("forget", "--classes", "5", "--json")
    assert second.code == 0, second.stderr[-2000:]
    result = second.json()
    assert result["version"] == "3" and result["parent_version"] == "2"
    assert result["forgotten_classes"] == [3, 5]
    assert result["metrics"]["test_forget_acc"] == 0  # the maximum over classes 3 and 5
    assert result["timings"]["features_source"] != "extracted"
    assert "features train" not in second.stderr  # nothing was extracted
    assert champion(ws) == "3"


def test_gate_rejection_registers_nothing(lineage):
    ws, _, _ = lineage
    before_versions, before_champion = versions(ws), champion(ws)
    run = ws.lau("forget", "--classes", "7", "--max-retain-drop", "-1", "--json")
    assert run.code == 1
    result = run.json()
    assert result["status"] == "rejected" and result["version"] is None
    assert versions(ws) == before_versions and champion(ws) == before_champion
    shown = ws.lau("request", "show", result["request_id"], "--json").json()
    assert shown["status"] == "rejected" and "retain_drop" in shown["error"]
    failed = [c for c in shown["gate"]["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["retain_drop"] and failed[0]["threshold"] == -1.0


def test_process_handles_each_pending_request_once(lineage):
    ws, _, _ = lineage
    added = [ws.lau("request", "add", "--classes", c, "--json").json()["request_id"] for c in ("1", "8")]
    run = ws.lau("process", "--json")
    assert run.code == 0, run.stderr[-2000:]
    results = {r["request_id"]: r for r in run.json()}
    assert set(results) == set(added)
    assert all(r["status"] == "registered" for r in results.values())
    again = ws.lau("process", "--json")
    assert again.code == 0 and again.json() == []
    final = {r["request_id"]: r["status"] for r in ws.lau("request", "list", "--json").json()}
    assert all(final[r] == "registered" for r in added)


def test_report_command_points_at_s3(lineage):
    ws, _, first = lineage
    where = ws.lau("report", first["request_id"])
    assert where.code == 0 and where.stdout.strip() == first["report_uri"]
    text = ws.lau("report", "2", "--print")
    assert text.code == 0 and "Verdict: REGISTERED" in text.stdout and "forget_acc" in text.stdout


def test_training_after_a_deletion_excludes_the_class(lineage):
    ws, trained, _ = lineage
    retrained = ws.lau("train", "--json")
    assert retrained.code == 0, retrained.stderr[-2000:]
    result = retrained.json()
    assert 3 in result["excluded_classes"] and 3 in result["erased_classes"]
    assert result["train_images"] < trained["train_images"]  # class 3's images are gone
    from mlflow.tracking import MlflowClient

    tags = MlflowClient().get_model_version(ws.model, result["version"]).tags
    assert 3 in json.loads(tags["lau.excluded_classes"]) and 3 in json.loads(tags["lau.forgotten_classes"])
    assert tags["lau.gate"] == "passed" and "forget_acc=0==0" in tags["lau.gate_checks"]


def test_scheduled_deployment_picks_up_a_pending_request(tmp_path):
    ws = make_workspace(tmp_path, "it-serve", train={"epochs": 2}, data={"max_per_class": 150})
    assert ws.lau("train", "--json").code == 0
    request_id = ws.lau("request", "add", "--classes", "2", "--json").json()["request_id"]
    log = open(tmp_path / "serve.log", "w")
    server = warm_lau.popen([LAU, "serve", "--interval", "5", "--model", ws.model], env=ws.env(), cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, status = time.time() + 240, "pending"
        while time.time() < deadline and status not in ("registered", "rejected"):
            time.sleep(5)
            status = ws.lau("request", "show", request_id, "--json").json()["status"]
        assert status == "registered", (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_dvc_reproduces_a_registered_deletion(lineage, tmp_path):
    ws, _, first = lineage
    run = ws.lau("reproduce", first["version"], "--workdir", str(tmp_path / "clone"), "--json", timeout=900)
    assert run.code == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = run.json()
    assert result["match"] and result["mismatches"] == []
    for key in ("forget_acc", "test_forget_acc", "test_retain_acc", "mia_efficacy"):
        assert abs(result["dvc"][key] - first["metrics"][key]) <= 0.01
