"""The gate (lau/gate.py): drift against the lineage's root, new lineage roots, non-finite values."""

from __future__ import annotations

from lau.config import GateConfig
from lau.gate import verify, verify_trained


def deletion(**changes: float) -> dict:
    return {"forget_acc": 0.0, "test_forget_acc": 0.0, "retain_drop": 0.5, "mia_efficacy": 100.0,
            "root_test_retain_acc": 98.0, "root_retain_drop": 1.5, **changes}


def test_each_step_within_its_threshold_can_still_fail_the_total_drift() -> None:
    cfg = GateConfig(max_retain_drop=1.0, max_total_retain_drop=2.0)
    assert verify(deletion(), cfg).passed
    verdict = verify(deletion(root_retain_drop=2.5), cfg)
    assert not verdict.passed and [c.name for c in verdict.failed()] == ["root_retain_drop"]
    assert "root_retain_drop = 2.5 (must be <= 2)" in verdict.reason()


def test_no_root_no_drift_check() -> None:
    metrics = deletion()
    del metrics["root_test_retain_acc"]
    assert "root_retain_drop" not in {c.name for c in verify(metrics, GateConfig()).checks}


def test_a_candidate_with_non_finite_outputs_is_rejected_whatever_its_accuracies() -> None:
    verdict = verify(deletion(non_finite_outputs=12), GateConfig())
    assert not verdict.passed and "non_finite_outputs = 12" in verdict.reason()


def test_a_missing_or_nan_value_fails_its_check() -> None:
    assert not verify(deletion(retain_drop=float("nan")), GateConfig()).passed
    metrics = deletion()
    del metrics["test_forget_acc"]
    assert not verify(metrics, GateConfig()).passed


def test_a_new_root_must_not_recognise_any_erased_class() -> None:
    cfg = GateConfig(max_total_retain_drop=2.0)
    trained = {"test_retain_acc": 97.0, "forget_acc": 0.0, "test_forget_acc": 2.0,
               "root_test_retain_acc": 98.0, "root_retain_drop": 1.0}
    verdict = verify_trained(trained, cfg, erased=(3,))
    assert not verdict.passed and [c.name for c in verdict.failed()] == ["test_forget_acc"]
    assert verify_trained({**trained, "test_forget_acc": 0.0}, cfg, erased=(3,)).passed
    first = verify_trained({"test_retain_acc": 97.0}, cfg)  # the very first model: nothing erased, no root
    assert first.passed and [c.name for c in first.checks] == ["test_retain_acc"]
    assert not verify_trained({"test_retain_acc": float("nan")}, cfg).passed
