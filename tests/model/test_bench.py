"""`lau bench` underneath: every method on one small model, the CONTRACT row keys, the outputs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lau.bench import METHODS, check_methods, run_bench, write_outputs
from lau.config import DataConfig, Params
from lau.errors import BadInput

CONTRACT_ROW_KEYS = {"method", "unlearn_s", "forget_acc", "test_forget_acc", "retain_acc", "test_retain_acc",
                     "mia_efficacy", "probe_forget_acc"}


@pytest.mark.slow
def test_bench_rows_and_outputs(tmp_path: Path) -> None:
    params = Params()
    params = dataclasses.replace(params, data=DataConfig(dataset="mnist5k", max_per_class=60),
                                 train=dataclasses.replace(params.train, epochs=2))
    methods = ("lau", "retrain", "boundary_shrink")
    result = run_bench(params, methods, [(3,)])

    assert result["dataset"] == "mnist5k" and result["arch"] == "cnn" and result["forget_classes"] == [3]
    assert [row["method"] for row in result["rows"]] == list(methods)
    for row in result["rows"]:
        assert CONTRACT_ROW_KEYS <= set(row), CONTRACT_ROW_KEYS - set(row)
        assert row["unlearn_s"] >= 0
        for key in CONTRACT_ROW_KEYS - {"method", "unlearn_s"}:
            assert 0.0 <= row[key] <= 100.0, (row["method"], key, row[key])
    rows = {row["method"]: row for row in result["rows"]}
    assert rows["lau"]["forget_acc"] == 0.0
    assert rows["retrain"]["forget_acc"] == 0.0  # never saw class 3: the gold standard
    assert rows["lau"]["retain_acc"] > 50 and rows["retrain"]["test_retain_acc"] > 50

    paths = write_outputs(result, tmp_path / "bench" / "bench.json")
    written = json.loads(paths["json"].read_text())
    assert [row["method"] for row in written["rows"]] == list(methods)
    assert written["rows"][0]["features_s"] == result["features_s"]  # LAU's one-off cost, shown apart
    table = paths["table"].read_text()
    assert all(f"| {method} |" in table for method in methods)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_methods_names_the_valid_ones() -> None:
    with pytest.raises(BadInput, match="unknown method 'scrub'") as err:
        check_methods(("lau", "scrub"))
    assert all(method in str(err.value) for method in METHODS)
    with pytest.raises(BadInput, match="no method"):
        check_methods(())
    assert check_methods(("lau", "retrain")) == ("lau", "retrain")


@pytest.mark.parametrize(("depth", "says"), [("0", "--depth must be 1 or more"),
                                             ("9", "depth 9 is out of range for cnn: choose 1-3")])
def test_bench_rejects_a_bad_depth_before_training(tmp_path: Path, depth: str, says: str) -> None:
    """One line on stderr, exit 2, no output file: and no model trained first (it fails at once)."""
    out = tmp_path / "out.json"
    done = subprocess.run([str(Path(sys.executable).with_name("lau")), "bench", "--methods", "lau",
                           "--depth", depth, "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines
    assert "[original] epoch" not in done.stderr and not out.exists()
