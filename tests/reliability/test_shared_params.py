"""Deletions of different models share one params.yaml (`registry.model_name` is only a default:
`--model` lets several models live in one stack) and their per-model locks do not serialize them.
Each adds its classes to `data.excluded_classes`; none may be lost, or a later `lau train` would
bring a forgotten class back, and no writer may leave a half-written file."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from reliability_harness import REPO

pytestmark = [pytest.mark.reliability]


def test_concurrent_exclusions_lose_no_class_and_leave_a_readable_file(tmp_path: Path) -> None:
    from lau.config import load_params
    from tasks.params_file import exclude_classes

    params = tmp_path / "params.yaml"
    params.write_text(re.sub(r"excluded_classes: \[[^\]]*\]", "excluded_classes: []", (REPO / "params.yaml").read_text()))
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda klass: exclude_classes.fn(params, (klass,)), range(8)))
    assert yaml.safe_load(params.read_text())["data"]["excluded_classes"] == list(range(8))
    assert load_params(params).data.excluded_classes == tuple(range(8))
    assert "# which dataset" in params.read_text(), "the comments of params.yaml were lost"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "a temporary file was left behind"
