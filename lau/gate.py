"""The verification gate: a candidate is registered only if every check passes."""

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


def _check(name: str, value: float, op: str, threshold: float) -> Check:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Check(name, float("nan"), threshold, op, False)
    passed = {"==": value == threshold, "<=": value <= threshold, ">=": value >= threshold}[op]
    return Check(name, float(value), float(threshold), op, bool(passed))


def verify(metrics: dict, cfg: GateConfig) -> Verdict:
    """Forget accuracy 0 % on train and test images of every class forgotten so far (metrics are
    maxima over them), test-retain drop vs the parent within ``max_retain_drop`` points, and the
    optional MIA floor; outputs free of NaN and infinities, when the metrics count them."""
    checks = []
    if "non_finite_outputs" in metrics:  # a head gone NaN serves garbage whatever its argmax says
        checks.append(_check("non_finite_outputs", metrics["non_finite_outputs"], "==", 0))
    checks += [
        _check("forget_acc", metrics["forget_acc"], "==", 0.0),
        _check("test_forget_acc", metrics["test_forget_acc"], "==", 0.0),
        _check("retain_drop", metrics["retain_drop"], "<=", cfg.max_retain_drop),
    ]
    if cfg.min_mia_efficacy > 0:
        checks.append(_check("mia_efficacy", metrics["mia_efficacy"], ">=", cfg.min_mia_efficacy))
    return Verdict(all(c.passed for c in checks), tuple(checks))
