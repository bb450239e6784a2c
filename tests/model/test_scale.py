"""The scale benchmark's engine on a small synthetic case: it runs what a deletion runs and says so."""

from __future__ import annotations

from pathlib import Path

from lau.scale import run_scale, write_scale_outputs


def test_scale_benchmark_times_every_phase_on_synthetic_features(tmp_path: Path) -> None:
    result = run_scale(sizes=(1000,), dim=512, class_counts=(10,), seed=0)
    assert result["synthetic"] is True
    (row,) = result["rows"]
    assert (row["train_rows"], row["test_rows"], row["num_classes"], row["forget_rows"]) == (1000, 250, 10, 100)
    assert row["forget_acc"] == 0.0 and row["lau_steps"] > 0
    for key in ("lau_s", "evaluate_parent_s", "evaluate_candidate_s", "gate_s", "lau_peak_mb"):
        assert row[key] >= 0, key
    assert row["total_cold_s"] >= row["total_warm_s"] > 0
    paths = write_scale_outputs(result, tmp_path / "scale.json")
    table = paths["table"].read_text()
    assert table.startswith("SYNTHETIC") and "| 10 | 1000 | 250 | 100 |" in table
