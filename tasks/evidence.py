"""What one attempt showed: the engine's evaluation, the gate's verdict and where they came from.

Built once per attempt by a flow, then read by the plots, the audit report, the registration
(``evaluation.json`` of the version's MLflow run) and the ledger; read back from MLflow when a run
that crashed after registering is completed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lau.evaluation import Evaluation
from lau.gate import Verdict
from lau.utils import json_safe


@dataclass(frozen=True)
class Evidence:
    evaluation: Evaluation
    verdict: Verdict
    metrics: dict[str, Any]  # the evaluation's metrics plus the lineage's (root accuracy and drift)
    forgotten: tuple[int, ...]  # every class the candidate must not recognise (cumulative)
    parent_version: str
    class_names: tuple[str, ...]
    feature_cache_key: str
    feature_cache_sha256: str
    timings: dict[str, Any] = field(default_factory=dict)
    lau: dict[str, Any] = field(default_factory=dict)  # the LAU settings chosen for this candidate

    def to_json(self) -> dict[str, Any]:
        return json_safe({
            "evaluation": self.evaluation.to_json(), "gate": self.verdict.to_json(), "metrics": self.metrics,
            "forgotten": list(self.forgotten), "parent_version": self.parent_version,
            "class_names": list(self.class_names), "feature_cache_key": self.feature_cache_key,
            "feature_cache_sha256": self.feature_cache_sha256, "timings": self.timings, "lau": self.lau})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        return cls(Evaluation.from_json(data["evaluation"]), Verdict.from_json(data["gate"]),
                   dict(data["metrics"]), tuple(data["forgotten"]), str(data["parent_version"]),
                   tuple(data["class_names"]), data["feature_cache_key"], data["feature_cache_sha256"],
                   dict(data.get("timings") or {}), dict(data.get("lau") or {}))

    def ledger_fields(self, version: str | None) -> dict[str, Any]:
        """What the request's ledger record keeps of it."""
        return {"parent_version": self.parent_version, "version": version,
                "forgotten_classes": list(self.forgotten), "gate": self.verdict.to_json(),
                "metrics": json_safe(self.metrics), "timings": self.timings, "lau": self.lau or None}
