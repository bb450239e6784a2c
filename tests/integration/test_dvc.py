"""`dvc repro` from a fresh clone: what the pipeline promises (dvc.yaml, lau/stages.py, .dvc/config).

Each workspace is a copy of the current working tree as git sees it (tracked and untracked,
ignored files left out: no .venv, no .stack, no DVC outputs), committed into a new git repository,
with params.yaml shrunk so that one `dvc repro` takes seconds. The push/pull test needs the local
stack (`make up && source .stack/env`; `make test` does both) and is skipped without it outside CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from lau.metrics import CONTRACT_KEYS
from lau.stages import compare_metrics
from tests import warm_lau

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
STAGES = ["erasures", "prepare", "train", "featurize", "unlearn", "evaluate"]
# Produced by `dvc repro` but tracked by git (cache: false): a fresh clone would carry the lead's.
DVC_PRODUCTS = ("dvc.lock", "metrics/", "plots/", "dvc_plots/")
SMALL = {("data", "max_per_class"): 100, ("train", "epochs"): 2}  # ~15 s for the whole pipeline
STACK_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "MLFLOW_TRACKING_URI",
              "MLFLOW_S3_ENDPOINT_URL", "PREFECT_API_URL", "LAU_S3_ENDPOINT")


# ---------------------------------------------------------------- helpers


def run(cmd: list[str], cwd: Path, *, stack: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with the venv first on PATH (dvc.yaml calls `python`); no stack settings
    unless ``stack``, which proves the pipeline itself needs no service. The stages' ``python -m``
    are forked from the tests' fork server (tests/warm_python.py) unless LAU_TESTS_COLD=1."""
    env = {k: v for k, v in os.environ.items() if stack or k not in STACK_VARS}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if not warm_lau.cold():
        env["PATH"] = f"{warm_lau.python_dir()}{os.pathsep}{env['PATH']}"
        env["LAU_FORK_SOCKET"] = warm_lau.python_socket()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def dvc(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    exe = shutil.which("dvc", path=str(VENV_BIN)) or shutil.which("dvc")
    if exe is None:
        pytest.skip("dvc is not installed in this environment")
    return run([exe, *args], cwd, **kw)


def git(*args: str, cwd: Path) -> str:
    ident = ["-c", "user.name=lau tests", "-c", "user.email=tests@lau.invalid", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *ident, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def ran_stages(output: str, *, with_erasures: bool = False) -> list[str]:
    """Stages `dvc repro` ran, in order, from its "Running stage 'x':" lines (the `erasures` stage,
    which runs every time, left out unless asked for)."""
    ran = re.findall(r"Running stage '([^']+)'", output)
    return ran if with_erasures else [stage for stage in ran if stage != "erasures"]


def set_params(workspace: Path, changes: dict[tuple[str, str], object]) -> None:
    path = workspace / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for (section, key), value in changes.items():
        params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def working_tree_files() -> list[str]:
    """What `git add -A && git clone` would carry: tracked and untracked, minus ignored files."""
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=REPO_ROOT)
    return sorted(p for p in set(listed.split("\0")) if p and (REPO_ROOT / p).is_file()
                  and not p.startswith(DVC_PRODUCTS))


def fresh_clone(dest: Path) -> Path:
    """A committed copy of the working tree with the small params, as a fresh clone would be."""
    for relative in working_tree_files():
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, target)
    set_params(dest, SMALL)
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "fresh clone", cwd=dest)
    return dest


def read(workspace: Path, relative: str) -> dict | list:
    return json.loads((workspace / relative).read_text())


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh clone after one `dvc repro`, and that repro's output. Tests copy it before changing it."""
    workspace = fresh_clone(tmp_path_factory.mktemp("reproduced"))
    result = dvc("repro", cwd=workspace)
    return workspace, result.stdout + result.stderr


@pytest.fixture
def reproduced_copy(reproduced: tuple[Path, str], tmp_path: Path) -> Path:
    """A private copy of the reproduced workspace (git repo and DVC cache included)."""
    return Path(shutil.copytree(reproduced[0], tmp_path / "workspace", symlinks=True))


# ---------------------------------------------------------------- the pipeline


def test_repro_runs_every_stage_then_only_the_erasure_check(reproduced: tuple[Path, str]) -> None:
    """The erasure record is read on every run (it lives on S3, not in the repo); the rest reruns
    only when it, a param or a dependency changed. Offline, it says so in one line and goes on."""
    workspace, output = reproduced
    assert ran_stages(output, with_erasures=True) == STAGES
    assert "could not read the erasure record" in output
    status = dvc("status", cwd=workspace).stdout
    assert "erasures" in status and "always changed" in status
    assert not any(f"{stage}:" in status for stage in STAGES[1:]), status
    again = dvc("repro", cwd=workspace)
    assert ran_stages(again.stdout + again.stderr, with_erasures=True) == ["erasures"]
    for stage in STAGES[1:]:
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout + again.stderr


def test_metrics_hold_the_contract_and_the_class_is_forgotten(reproduced: tuple[Path, str]) -> None:
    workspace, _ = reproduced
    metrics = read(workspace, "metrics/unlearn.json")
    assert set(CONTRACT_KEYS) <= set(metrics)
    assert metrics["forget_acc"] == 0.0 and metrics["test_forget_acc"] == 0.0
    assert metrics["original"]["test_forget_acc"] > 50.0  # it was recognised before
    assert metrics["retain_drop"] == pytest.approx(
        metrics["original_test_retain_acc"] - metrics["test_retain_acc"], abs=1e-3)
    assert metrics["forgotten_classes"] == [3]
    assert {c["name"] for c in metrics["gate"]["checks"]} >= {"forget_acc", "test_forget_acc", "retain_drop"}
    train = read(workspace, "metrics/train.json")
    assert train["test_acc"] > 50.0 and train["train_images"] + train["val_images"] == 800 and train["test_images"] == 200
    per_class = read(workspace, "plots/per_class.json")
    assert [row["class"] for row in per_class] == list(range(10))
    assert per_class[3]["after"] == 0.0 and per_class[3]["before"] > 50.0
    for image in ("plots/per_class.png", "plots/confusion.png"):
        assert (workspace / image).read_bytes()[:4] == b"\x89PNG"
    text = (workspace / "metrics/unlearn.json").read_text() + (workspace / "metrics/train.json").read_text()
    assert str(workspace) not in text and "_s\"" not in text  # no paths, no timings


def test_unlearned_checkpoint_records_its_params(reproduced: tuple[Path, str]) -> None:
    workspace, _ = reproduced
    meta = read(workspace, "models/unlearned/config.json")["metadata"]
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    assert meta["params"]["unlearn"] == params["unlearn"]
    assert meta["parent"]["params"]["train"] == params["train"]
    parent = read(workspace, "models/original/config.json")
    assert meta["parent"]["weights_sha256"] == parent["weights_sha256"]
    assert meta["forgotten"] == [3]


def test_dvc_outputs_are_git_ignored(reproduced: tuple[Path, str]) -> None:
    workspace, _ = reproduced
    untracked = git("status", "--porcelain", "--untracked-files=all", cwd=workspace).split("\n")
    paths = {line[3:] for line in untracked if line}
    for cached in ("data/prepared/dataset.safetensors", "models/original/model.safetensors",
                   "cache/features/features.safetensors", "plots/confusion.png"):
        assert cached not in paths
    assert {"dvc.lock", "metrics/unlearn.json", "metrics/train.json"} <= paths  # git keeps these


def test_an_unlearn_param_reruns_only_unlearn_and_evaluate(reproduced_copy: Path) -> None:
    set_params(reproduced_copy, {("unlearn", "margin"): 0.5})
    result = dvc("repro", cwd=reproduced_copy)
    assert ran_stages(result.stdout) == ["unlearn", "evaluate"]
    meta = read(reproduced_copy, "models/unlearned/config.json")["metadata"]
    assert meta["params"]["unlearn"]["margin"] == 0.5


def test_a_gate_param_reruns_only_evaluate(reproduced_copy: Path) -> None:
    set_params(reproduced_copy, {("gate", "max_retain_drop"): 0.0})
    assert ran_stages(dvc("repro", cwd=reproduced_copy).stdout) == ["evaluate"]
    gate = read(reproduced_copy, "metrics/unlearn.json")["gate"]
    assert next(c for c in gate["checks"] if c["name"] == "retain_drop")["threshold"] == 0.0


def test_a_param_no_stage_reads_reruns_nothing(reproduced_copy: Path) -> None:
    set_params(reproduced_copy, {("baselines", "finetune_epochs"): 3, ("registry", "alias"): "prod"})
    assert ran_stages(dvc("repro", cwd=reproduced_copy).stdout) == []


def test_a_train_param_reruns_from_train_on(reproduced_copy: Path) -> None:
    set_params(reproduced_copy, {("train", "epochs"): 3})
    result = dvc("repro", cwd=reproduced_copy)
    assert ran_stages(result.stdout) == ["train", "featurize", "unlearn", "evaluate"]


def test_two_fresh_clones_give_the_same_bytes(reproduced: tuple[Path, str], tmp_path: Path) -> None:
    first, _ = reproduced
    second = fresh_clone(tmp_path / "second")
    dvc("repro", cwd=second)
    for relative in ("metrics/train.json", "metrics/unlearn.json", "plots/per_class.json"):
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    # dvc.lock records the md5 of every output: equal locks mean every output is byte-identical
    assert (first / "dvc.lock").read_text() == (second / "dvc.lock").read_text()
    assert compare_metrics(read(first, "metrics/unlearn.json"), read(second, "metrics/unlearn.json"),
                           tolerance=0.0) == []


def test_compare_metrics_names_each_mismatch(reproduced: tuple[Path, str]) -> None:
    expected = read(reproduced[0], "metrics/unlearn.json")
    assert compare_metrics(expected, expected) == []
    actual = json.loads(json.dumps(expected))
    actual["test_retain_acc"] += 0.5
    actual["retain_acc"] += 0.005  # inside the tolerance
    actual["gate"]["passed"] = not expected["gate"]["passed"]
    del actual["mia_efficacy"]
    actual["new_metric"] = 1.0  # metrics may grow
    lines = compare_metrics(expected, actual, tolerance=0.01)
    assert len(lines) == 3, lines
    assert lines[0].startswith("test_retain_acc: expected") and "tolerance 0.01" in lines[0]
    assert lines[1] == f"mia_efficacy: expected {expected['mia_efficacy']:g}, missing"
    assert lines[2].startswith("gate.passed: expected")


@pytest.mark.parametrize(("key", "value", "says"), [
    (("train", "epochs"), -1, "'train.epochs' must be > 0"),
    (("unlearn", "eps"), "large", "'unlearn.eps' must be a number"),
    (("train", "momentum"), 0.9, "unknown key 'train.momentum'"),
])
def test_a_bad_param_stops_repro_at_the_first_stage(tmp_path: Path, key: tuple[str, str], value: object,
                                                    says: str) -> None:
    workspace = fresh_clone(tmp_path / "workspace")
    set_params(workspace, {key: value})
    result = dvc("repro", cwd=workspace, check=False)
    assert result.returncode != 0
    assert ran_stages(result.stdout, with_erasures=True) == ["erasures"]
    ours = [line for line in result.stderr.splitlines() if line.startswith("lau")]
    assert len(ours) == 1 and says in ours[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (workspace / "data" / "prepared" / "dataset.safetensors").exists()
    assert not (workspace / "dvc.lock").exists()


# ---------------------------------------------------------------- the remote (needs the stack)


def test_remote_is_the_stack_without_credentials() -> None:
    config = (REPO_ROOT / ".dvc" / "config").read_text()
    assert "url = s3://lau/dvc" in config and "endpointurl = http://127.0.0.1:8333" in config
    assert "remote = stack" in config and "analytics = false" in config
    assert "secret" not in config.lower() and "access_key" not in config.lower()


@pytest.mark.integration
def test_push_then_pull_into_a_fresh_clone(reproduced_copy: Path, tmp_path: Path) -> None:
    if not os.environ.get("LAU_S3_ENDPOINT") and not os.environ.get("CI"):
        pytest.skip("the local stack is not configured: run `make up` and `source .stack/env`")
    bucket, endpoint = os.environ.get("LAU_BUCKET", "lau"), os.environ["LAU_S3_ENDPOINT"]
    prefix = f"dvc-test-{uuid.uuid4().hex[:12]}"  # this run's own corner of the bucket

    def use_test_remote(workspace: Path) -> None:
        dvc("remote", "modify", "--local", "stack", "url", f"s3://{bucket}/{prefix}", cwd=workspace)
        dvc("remote", "modify", "--local", "stack", "endpointurl", endpoint, cwd=workspace)

    origin = reproduced_copy
    use_test_remote(origin)
    try:
        pushed = dvc("push", cwd=origin, stack=True)
        assert "pushed" in pushed.stdout
        git("add", "-A", cwd=origin)
        git("commit", "-q", "-m", "repro", cwd=origin)  # dvc.lock, metrics, .gitignore files
        clone = tmp_path / "clone"
        git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
        assert not (clone / "models" / "unlearned").exists()
        use_test_remote(clone)
        dvc("pull", cwd=clone, stack=True)
        for relative in ("data/prepared/dataset.safetensors", "models/original/model.safetensors",
                         "models/unlearned/config.json", "cache/features/features.safetensors",
                         "plots/confusion.png"):
            assert (clone / relative).read_bytes() == (origin / relative).read_bytes(), relative
        status = dvc("status", cwd=clone).stdout
        assert not any(f"{stage}:" in status for stage in STAGES[1:]), status  # only `erasures` always runs
        assert "in sync" in dvc("status", "-c", cwd=clone, stack=True).stdout
    finally:
        delete_prefix(bucket, prefix, endpoint)


def delete_prefix(bucket: str, prefix: str, endpoint: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
