"""Durable erasure against the real stack: once a class is erased, no path serves it again.

One small lineage for the module: train, then forget class 3 as an unprivileged user over a
params file that user cannot write. Then a retrain from that pristine params file, `dvc repro` in a
fresh clone with the stack's environment, and a chain of deletions whose total drift the gate bounds.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from tests.integration.conftest import LAU, REPO, Run, Workspace, make_workspace, requires_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_stack]

ERASED = 3
SMALL = {"data": {"max_per_class": 100}, "train": {"epochs": 4},
         "gate": {"max_retain_drop": 5.0, "max_total_retain_drop": 5.0}}


def unprivileged(ws: Workspace, work, home, *args: str) -> Run:
    """`lau` without the power to write files it does not own the write bit of: as root (the CI and
    production images here), with the DAC override capabilities dropped by setpriv, so that the
    permission bits apply to it as to uid 1000 in the production image; as itself otherwise."""
    env = {**ws.env(LAU_WORK_DIR=str(work)), "HOME": str(home), "MPLCONFIGDIR": str(home / "mpl")}
    prefix = []
    if os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown", "--inh-caps=-all", "--"]
    done = subprocess.run([*prefix, LAU, *args, "--model", ws.model], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """Trained, then class 3 forgotten by a process that cannot write params.yaml or its folder."""
    root = tmp_path_factory.mktemp("erasure")
    ws = make_workspace(root / "params", "it-erasure", **SMALL)
    work, home = root / "work", root / "home"
    for folder in (work, home):
        folder.mkdir()
    trained = ws.lau("train", "--json", LAU_WORK_DIR=str(work))
    assert trained.code == 0, trained.stderr[-2000:]
    before = ws.params.read_bytes()
    ws.params.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    ws.params.parent.chmod(0o555)
    try:
        forgot = unprivileged(ws, work, home, "forget", "--classes", str(ERASED), "--json")
    finally:
        ws.params.parent.chmod(0o755)
    return ws, work, trained.json(), forgot, before


def lau(ws: Workspace, work, *args: str) -> Run:
    return ws.lau(*args, LAU_WORK_DIR=str(work))


def test_an_unprivileged_deletion_registers_and_never_writes_params(lineage) -> None:
    ws, work, _, forgot, before = lineage
    assert forgot.code == 0, forgot.stderr[-3000:]
    summary = forgot.json()
    assert summary["status"] == "registered" and summary["forgotten_classes"] == [ERASED]
    assert ws.params.read_bytes() == before
    assert sorted(p.name for p in ws.params.parent.iterdir()) == ["params.yaml"]
    shown = lau(ws, work, "request", "show", summary["request_id"], "--json").json()
    assert shown["status"] == "registered" and shown["report_uri"]
    erasures = lau(ws, work, "erasures", "--json").json()
    assert [(e["class_id"], e["request_id"], e["version"]) for e in erasures] == [
        (ERASED, summary["request_id"], summary["version"])]


def champion_predictions(ws: Workspace, klass: int) -> tuple[int, int, dict]:
    """(images of ``klass`` predicted as ``klass``, images of it, champion's tags): a plain MLflow
    client on every image of the class in the dataset, train and test alike."""
    script = f"""
import json, mlflow, torch
from mlflow import MlflowClient
from lau.data import load_dataset
model = mlflow.pytorch.load_model("models:/{ws.model}@champion")
raw = load_dataset("mnist5k")
images = raw.images[raw.labels == {klass}]
pred = model(images.float() / 255).argmax(1)
tags = MlflowClient().get_model_version_by_alias("{ws.model}", "champion").tags
print(json.dumps([int((pred == {klass}).sum()), len(images), tags]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=os.environ, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    hits, total, tags = json.loads(done.stdout)
    return hits, total, tags


def test_a_retrain_from_a_pristine_params_file_does_not_bring_the_class_back(lineage) -> None:
    ws, work, trained, _, before = lineage
    assert ws.params.read_bytes() == before  # pristine: the deletion wrote nothing into it
    retrained = lau(ws, work, "train", "--json")
    assert retrained.code == 0, retrained.stderr[-2000:]
    result = retrained.json()
    assert result["status"] == "registered" and result["erased_classes"] == [ERASED]
    assert result["train_images"] < trained["train_images"]  # class 3's images were left out
    assert result["metrics"]["forget_acc"] == 0 and result["metrics"]["test_forget_acc"] == 0
    assert {c["name"] for c in result["gate"]["checks"]} >= {"forget_acc", "test_forget_acc"}
    hits, total, tags = champion_predictions(ws, ERASED)
    assert total == 500 and hits == 0
    assert ERASED in json.loads(tags["lau.forgotten_classes"]) and tags["lau.method"] == "train"


def test_dvc_repro_with_the_stack_leaves_the_erased_class_out(lineage, tmp_path) -> None:
    ws, _, _, _, _ = lineage
    from tests.integration.test_dvc import dvc, fresh_clone, read, set_params

    clone = fresh_clone(tmp_path / "clone")
    set_params(clone, {("registry", "model_name"): ws.model})
    dvc("repro", "prepare", "train", cwd=clone, stack=True)
    from lau.data import load_split

    assert ERASED not in load_split(clone / "data/prepared/dataset.safetensors").train_labels.tolist()
    assert read(clone, "metrics/train.json")["erased_classes"] == [ERASED]
    assert read(clone, "data/erasures.json")["erased_classes"] == [ERASED]


def test_drift_against_the_root_is_bounded_even_when_each_step_passes(lineage, tmp_path) -> None:
    """A step within max_retain_drop of its parent is still rejected when its drop against the
    lineage's root exceeds max_total_retain_drop: k small steps cannot add up to a large loss."""
    ws, work, _, _, _ = lineage
    first = lau(ws, work, "forget", "--classes", "5", "--max-retain-drop", "100", "--json")
    assert first.code == 0, first.stderr[-2000:]
    total = first.json()["metrics"]["root_retain_drop"]
    params = yaml.safe_load(ws.params.read_text())
    params["gate"]["max_total_retain_drop"] = round(total - 3.0, 4)  # the lineage is already past it
    ws.params.write_text(yaml.safe_dump(params, sort_keys=False))
    second = lau(ws, work, "forget", "--classes", "7", "--max-retain-drop", "100", "--json")
    assert second.code == 1, second.stderr[-2000:]
    checks = {c["name"]: c for c in second.json()["gate"]["checks"]}
    assert checks["retain_drop"]["passed"] and not checks["root_retain_drop"]["passed"]
    assert checks["root_retain_drop"]["value"] > checks["root_retain_drop"]["threshold"]
    assert second.json()["version"] is None


def test_erased_classes_are_refused_as_new_requests(lineage) -> None:
    ws, work, _, _, _ = lineage
    again = lau(ws, work, "request", "add", "--classes", str(ERASED))
    assert again.code == 2 and "already erased" in again.stderr.strip().splitlines()[-1]
