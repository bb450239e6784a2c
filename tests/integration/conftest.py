"""Shared helpers for tests against the real stack (S3, MLflow, Prefect from `make up`)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests import warm_lau

REPO = Path(__file__).resolve().parents[2]
LAU = str(Path(sys.executable).with_name("lau"))


def stack_available() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI") and os.environ.get("PREFECT_API_URL"))


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self):  # noqa: ANN201
        return json.loads(self.stdout)


@dataclass
class Workspace:
    """A private params.yaml, work dir and model name, so tests never collide."""

    root: Path
    model: str

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "LAU_PARAMS": str(self.params), "LAU_WORK_DIR": str(self.root / "work"),
                "PYTHONUNBUFFERED": "1", **extra}

    def lau(self, *args: str, timeout: float = 300, **extra_env: str) -> Run:
        done = warm_lau.run([LAU, *args, "--model", self.model], timeout=timeout, env=self.env(**extra_env),
                            cwd=REPO)
        return Run(done.returncode, done.stdout, done.stderr)

    def read_params(self) -> dict:
        return yaml.safe_load(self.params.read_text())


def make_workspace(root: Path, prefix: str, **overrides: dict) -> Workspace:
    """Copy the repo's params.yaml with per-section overrides (e.g. train={"epochs": 3})."""
    root.mkdir(parents=True, exist_ok=True)
    text = (REPO / "params.yaml").read_text()
    params = yaml.safe_load(text)
    for section, values in overrides.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return Workspace(root, f"{prefix}-{uuid.uuid4().hex[:8]}")


requires_stack = pytest.mark.skipif(not stack_available() and not os.environ.get("CI"),
                                    reason="needs the local stack: make up && source .stack/env")
