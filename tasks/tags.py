"""The ``lau.*`` tags of a model version, built in one place for every flow that registers one.

A version's tags say where it comes from (parent, lineage root, data, features, code) and what it
has erased, and they carry the gate's verdict: ``lau.gate`` is written from a ``Verdict`` object
and nothing else, so no tag says ``passed`` that a verdict did not say.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lau.gate import Verdict
from tasks.registry import TAG


@dataclass(frozen=True)
class VersionTags:
    """Everything a registered version carries besides its weights hash (added at registration)."""

    method: str  # train | consolidate | adopt (lineage roots) or the unlearning method of a deletion
    verdict: Verdict
    dataset: str
    arch: str
    num_classes: int
    depth: int
    data_version: str  # the prepared data's md5 (its DVC address)
    data_uri: str
    feature_cache_key: str
    feature_cache_sha256: str
    test_retain_acc: float
    code_commit: str
    forgotten_classes: tuple[int, ...] = ()  # every class this lineage has erased (cumulative)
    excluded_classes: tuple[int, ...] = ()  # classes not in the training data (static or erased)
    parent_version: str = ""  # "" for a lineage root
    root_version: str = ""  # "" when this version is the root
    root_test_retain_acc: float | None = None
    request_ids: tuple[str, ...] = ()
    consolidated_from: str = ""  # the champion a consolidation (or an adoption with --replace) replaced
    adopted_from: str = ""  # an adopted model's weights: the file or MLflow URI they came from, and their sha256
    lau: dict[str, Any] = field(default_factory=dict)  # the LAU settings a deletion chose
    search: dict[str, str] = field(default_factory=dict)  # LAUResult.tags(): the candidate kept and those tried

    def __post_init__(self) -> None:
        if not self.verdict.passed:
            raise ValueError(f"a version is only registered after a passing gate: {self.verdict.reason()}")

    def to_mlflow(self) -> dict[str, str]:
        """The tags as MLflow stores them: ``lau.``-prefixed strings."""
        values: dict[str, Any] = {
            "method": self.method, "gate": "passed", "gate_checks": _checks(self.verdict),
            "dataset": self.dataset, "arch": self.arch, "num_classes": self.num_classes, "depth": self.depth,
            "data_version": self.data_version, "data_uri": self.data_uri,
            "feature_cache_key": self.feature_cache_key, "feature_cache_sha256": self.feature_cache_sha256,
            "test_retain_acc": self.test_retain_acc, "code_commit": self.code_commit,
            "forgotten_classes": json.dumps(sorted(self.forgotten_classes)),
            "excluded_classes": json.dumps(sorted(self.excluded_classes)),
            "parent_version": self.parent_version, "root_version": self.root_version,
            "root_test_retain_acc": "" if self.root_test_retain_acc is None else self.root_test_retain_acc,
            "request_ids": ",".join(self.request_ids), "consolidated_from": self.consolidated_from,
            "adopted_from": self.adopted_from,
            "lau_settings": json.dumps(self.lau, sort_keys=True) if self.lau else "",
        }
        tags = {TAG + k: str(v) for k, v in values.items()}
        return {**{k: v for k, v in self.search.items() if k.startswith(TAG) and k not in tags}, **tags}


def _checks(verdict: Verdict) -> str:
    """The verdict in one tag: ``forget_acc=0<=0;retain_drop=0.11<=1`` (MLflow tags are strings)."""
    return ";".join(f"{c.name}={c.value:g}{c.op}{c.threshold:g}" for c in verdict.checks)
