"""`lau reproduce VERSION`: rebuild a registered version with `dvc repro` and compare its metrics.

The version's MLflow run holds the exact params.yaml of the deletion; its parent's run holds the
training params. The command clones this repository at the version's code commit into a work
directory, writes a params.yaml that trains the parent's way and forgets the version's classes,
runs `dvc repro`, checks the data version (DVC md5) and compares every CONTRACT metric with the
registry's, within 0.01 points. It reproduces versions one deletion away from a trained model
(the pipeline has one unlearn stage); deeper versions are refused with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import yaml

from lau.errors import BadInput
from lau.metrics import CONTRACT_KEYS
from lau.stages import compare_metrics
from lau.utils import file_md5, progress
from tasks.context import Context
from tasks.settings import InfraError

REPO = Path(__file__).resolve().parents[1]


def reproduce_version(ctx: Context, version: str, workdir: str | None = None) -> dict[str, Any]:
    target = ctx.registry.get(version)
    parent_version = target.tag("parent_version")
    if not parent_version:
        raise BadInput(f"version {version} is a trained model, not a deletion; nothing to reproduce")
    parent = ctx.registry.get(parent_version)
    if parent.tag("parent_version"):
        raise BadInput(f"version {version} is {1 + _depth(ctx, parent)} deletions from its trained model; "
                       "`dvc repro` reproduces versions one deletion away")
    if parent.tag("method") == "adopt":
        raise BadInput(f"version {version} was unlearned from a team's model (version {parent_version}, "
                       f"adopted from {parent.tag('adopted_from').split(' ')[0]}): `dvc repro` needs its weights "
                       "under models/team/ in your checkout (docs/adopt.md)")
    params = _params_for(target, parent)
    root = Path(workdir or tempfile.mkdtemp(prefix=f"lau-reproduce-{version}-"))
    _checkout(root, target.tag("code_commit"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The parent's own exclusions are in the params written above; today's erasure record (which
    # holds the very class this version erased) must not change the data the parent was trained on.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "LAU_ERASURE_RECORD": "off"}
    progress(f"[reproduce] dvc repro in {root}")
    done = subprocess.run([str(Path(sys.executable).with_name("dvc")), "repro"], cwd=root, env=env,
                          stdout=sys.stderr, stderr=sys.stderr)
    if done.returncode != 0:
        raise InfraError(f"dvc repro failed in {root} (exit {done.returncode})")
    data_version = file_md5(root / "data" / "prepared" / "dataset.safetensors")
    actual = json.loads((root / "metrics" / "unlearn.json").read_text())
    expected = _registered_metrics(target)
    mismatches = compare_metrics({k: expected[k] for k in CONTRACT_KEYS if k in expected}, actual)
    if data_version != target.tag("data_version"):
        mismatches.insert(0, f"data version: registry {target.tag('data_version')}, dvc {data_version}")
    return {"model": ctx.model_name, "version": version, "workdir": str(root), "match": not mismatches,
            "mismatches": mismatches, "data_version": data_version,
            "registry": {k: expected.get(k) for k in CONTRACT_KEYS},
            "dvc": {k: actual.get(k) for k in CONTRACT_KEYS}}


def _params_for(target: Any, parent: Any) -> dict:
    """Training side from the parent's run, unlearning side from the version's, its classes."""
    trained = yaml.safe_load(_artifact_text(parent.run_id, "params.yaml"))
    deleted = yaml.safe_load(_artifact_text(target.run_id, "params.yaml"))
    params = dict(trained)
    params["unlearn"] = {**deleted["unlearn"], "forget_classes": list(target.forgotten)}
    params["gate"] = deleted["gate"]
    params["data"] = {**trained["data"], "excluded_classes": list(parent.excluded)}
    return params


def _registered_metrics(version: Any) -> dict:
    evaluation = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/evaluation.json")
    return evaluation["metrics"]


def _artifact_text(run_id: str, path: str) -> str:
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except mlflow.exceptions.MlflowException as err:
        raise InfraError(f"MLflow: cannot read {path} of run {run_id}: {err}") from None


def _checkout(root: Path, commit: str) -> None:
    """A clone of this repository at ``commit`` (HEAD when the commit is unknown here)."""
    if (root / ".git").is_dir():
        return
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(root)], check=True, stdout=sys.stderr)
    known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root,
                           capture_output=True).returncode == 0
    if known and commit != "unknown":
        subprocess.run(["git", "checkout", "--quiet", commit], cwd=root, check=True)
    else:
        progress(f"[reproduce] commit {commit} is not in this repository; using HEAD")


def _depth(ctx: Context, version: Any) -> int:
    steps = 0
    while version.tag("parent_version"):
        version = ctx.registry.get(version.tag("parent_version"))
        steps += 1
    return steps
