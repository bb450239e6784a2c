"""bench/generalize.py: the cross-dataset table counts what the per-class rows say, and bad input is
one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.generalize import main, summarize


def row(method: str, klass: int, drop: float, forget: float = 0.0, seconds: float = 0.01) -> dict:
    return {"method": method, "forget_classes": [klass], "forget_acc": forget, "test_forget_acc": 0.0,
            "retain_drop": drop, "unlearn_s": seconds, "original_test_retain_acc": 90.0,
            "test_retain_acc": 90.0 - drop}


def test_a_missed_class_and_a_drop_over_the_bound_are_counted(tmp_path: Path) -> None:
    result = {"dataset": "synth_shapes", "arch": "cnn", "original": {"epochs": 10, "test_acc": 74.0},
              "rows": [row("lau", 0, -0.5), row("lau", 1, 0.2), row("lau_paper", 0, 3.0, forget=2.0),
                       row("lau_paper", 1, 0.5), row("retrain", 0, 0.1, seconds=10.0)],
              "chain": {"chain": [0, 1], "rows": [{"forget_acc": 0, "test_forget_acc": 0, "root_retain_drop": -0.3}]}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    lines = summarize([path], max_drop=1.0)
    lau, paper = (next(line for line in lines if f"| {m} |" in line) for m in ("lau", "lau_paper"))
    assert "| 2/2 | -0.15 | 0.20 | 2/2 |" in lau
    assert "| 1/2 | 1.75 | 3.00 | 1/2 |" in paper
    assert "worst drift against the root -0.30" in lines[-1] and "(1,000x)" in lines[-1]


def test_a_file_that_is_not_a_result_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.json").write_text("{}")
    assert main([str(tmp_path / "bad.json")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
