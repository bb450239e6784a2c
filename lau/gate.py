"""The verification gate: a candidate is registered only if every check passes.

The same gate judges every version, whatever made it: ``verify`` a deletion's candidate,
``verify_trained`` a trained, consolidated or adopted model (a new lineage root).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from lau.config import GateConfig


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float
    op: str  # how value must compare with threshold: "==", "<=", ">="
    passed: bool


@dataclass(frozen=True)
class Verdict:
    passed: bool
    checks: tuple[Check, ...]

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def reason(self) -> str:
        """One line naming every failed check with its value and threshold."""
        return "; ".join(f"{c.name} = {c.value:g} (must be {c.op} {c.threshold:g})" for c in self.failed())

    def to_json(self) -> dict:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}

    @classmethod
    def of(cls, checks: list[Check]) -> Verdict:
        return cls(bool(checks) and all(c.passed for c in checks), tuple(checks))

    @classmethod
    def from_json(cls, data: dict) -> Verdict:
        checks = tuple(Check(c["name"], float("nan") if c["value"] is None else float(c["value"]),
                             float(c["threshold"]), c["op"], bool(c["passed"])) for c in data["checks"])
        return cls(bool(data["passed"]), checks)


def _check(name: str, value: float | None, op: str, threshold: float) -> Check:
    """A missing or non-finite value fails: nothing shows the property holds."""
    if value is None or not math.isfinite(float(value)):
        return Check(name, float("nan"), threshold, op, False)
    passed = {"==": value == threshold, "<=": value <= threshold, ">=": value >= threshold}[op]
    return Check(name, float(value), float(threshold), op, bool(passed))


def _forget_checks(metrics: dict) -> list[Check]:
    return [_check("forget_acc", metrics.get("forget_acc"), "==", 0.0),
            _check("test_forget_acc", metrics.get("test_forget_acc"), "==", 0.0)]


def _drift_check(metrics: dict, cfg: GateConfig) -> list[Check]:
    """Test-retain drop vs the lineage's root, when the candidate has one."""
    if metrics.get("root_test_retain_acc") is None:
        return []
    return [_check("root_retain_drop", metrics.get("root_retain_drop"), "<=", cfg.max_total_retain_drop)]


def _outputs_check(metrics: dict) -> list[Check]:
    """A candidate with NaN or infinite outputs is rejected whatever its accuracies say."""
    if "non_finite_outputs" not in metrics:
        return []
    return [_check("non_finite_outputs", metrics["non_finite_outputs"], "==", 0.0)]


def verify(metrics: dict, cfg: GateConfig) -> Verdict:
    """A deletion's candidate: outputs free of NaN and infinities (a head gone NaN serves garbage
    whatever its argmax says), forget accuracy 0 % on train and test images of every class
    forgotten so far (metrics are maxima over them), test-retain drop vs the parent within
    ``max_retain_drop`` points and vs the lineage's root within ``max_total_retain_drop``, and the
    optional MIA floor."""
    checks = [*_outputs_check(metrics), *_forget_checks(metrics),
              _check("retain_drop", metrics.get("retain_drop"), "<=", cfg.max_retain_drop),
              *_drift_check(metrics, cfg)]
    if cfg.min_mia_efficacy > 0:
        checks.append(_check("mia_efficacy", metrics.get("mia_efficacy"), ">=", cfg.min_mia_efficacy))
    return Verdict.of(checks)


def verify_trained(metrics: dict, cfg: GateConfig, erased: tuple[int, ...] = ()) -> Verdict:
    """A new lineage root (trained, consolidated, adopted): it recognises none of the model's erased
    classes (forget accuracy 0 % on their train and test images), its test-retain accuracy is
    finite and above ``min_test_retain_acc``, and within ``max_total_retain_drop`` of the lineage it
    replaces."""
    checks = [_check("test_retain_acc", metrics.get("test_retain_acc"), ">=", cfg.min_test_retain_acc)]
    if erased:
        checks += _forget_checks(metrics)
    return Verdict.of([*_outputs_check(metrics), *checks, *_drift_check(metrics, cfg)])
