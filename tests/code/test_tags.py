"""A version's tags (tasks/tags.py) and a flow's evidence record (tasks/evidence.py)."""

from __future__ import annotations

import json

import pytest

from flows.lineage import lineage_metrics, retained_accuracy
from lau.evaluation import Evaluation, ModelEvaluation
from lau.gate import Check, Verdict
from tasks.evidence import Evidence
from tasks.registry import Version
from tasks.tags import VersionTags

PASSED = Verdict.of([Check("forget_acc", 0.0, 0.0, "==", True), Check("retain_drop", 0.2, 1.0, "<=", True)])
FAILED = Verdict.of([Check("forget_acc", 4.0, 0.0, "==", False)])


def tags(verdict: Verdict = PASSED, **changes: object) -> VersionTags:
    fields = dict(method="lau", verdict=verdict, dataset="mnist5k", arch="cnn", num_classes=10, depth=1,
                  data_version="d" * 32, data_uri="s3://lau/dvc/x", feature_cache_key="k", feature_cache_sha256="s",
                  test_retain_acc=98.0, code_commit="abc", forgotten_classes=(5, 3), parent_version="1",
                  root_version="1", root_test_retain_acc=98.2, request_ids=("req-1",))
    return VersionTags(**{**fields, **changes})


def test_only_a_passing_verdict_can_become_tags() -> None:
    """No version can carry `lau.gate=passed` that a verdict did not say."""
    with pytest.raises(ValueError, match="passing gate"):
        tags(FAILED)


def test_tags_are_prefixed_strings_with_the_verdict_in_them() -> None:
    stored = tags().to_mlflow()
    assert all(k.startswith("lau.") and isinstance(v, str) for k, v in stored.items())
    assert stored["lau.gate"] == "passed" and stored["lau.gate_checks"] == "forget_acc=0==0;retain_drop=0.2<=1"
    assert json.loads(stored["lau.forgotten_classes"]) == [3, 5] and stored["lau.request_ids"] == "req-1"


def test_a_root_has_no_parent_and_every_version_names_its_root() -> None:
    root = Version("m", "1", "run", tags(parent_version="", root_version="").to_mlflow())
    child = Version("m", "2", "run", tags().to_mlflow())
    assert root.root_version == "1" and child.root_version == "1"
    assert lineage_metrics(98.2, 97.0) == {"root_test_retain_acc": 98.2, "root_retain_drop": 1.2}
    assert lineage_metrics(None, 97.0) == {}


def test_the_drift_compares_the_root_on_the_same_classes_as_the_candidate() -> None:
    """Forgetting an easy class lowers the average of the classes left without harming them: the
    root is scored on the retained classes only, so that is no drift."""
    confusion = ((10, 0, 0), (0, 8, 2), (0, 1, 9))  # class 0: 100 %, classes 1 and 2: 85 %
    assert retained_accuracy(confusion, (0, 1, 2)) == 90.0
    assert retained_accuracy(confusion, (1, 2)) == 85.0  # a candidate that forgot class 0, at 85 %: drift 0
    assert retained_accuracy(confusion, ()) is None


def test_evidence_round_trips_through_json_with_nan_as_null() -> None:
    model = ModelEvaluation({"test_acc": 98.0}, [99.0, None], [98.0, None], [[1, 0], [0, 1]])
    evidence = Evidence(Evaluation({"forget_acc": float("nan")}, model, model, 0.5), PASSED,
                        {"forget_acc": float("nan"), "retain_drop": 0.2}, (3,), "1", ("a", "b"), "k", "s",
                        {"unlearn_s": 0.01}, {"method": "lau"})
    data = json.loads(json.dumps(evidence.to_json()))
    again = Evidence.from_json(data)
    assert again.verdict == PASSED and again.forgotten == (3,) and again.metrics["forget_acc"] is None
    assert list(again.evaluation.after.per_class_train_acc) == [99.0, None]
    assert again.ledger_fields("2")["gate"]["passed"] is True


def test_the_candidate_lau_kept_is_tagged_and_cannot_overwrite_the_gate() -> None:
    from lau.search import CandidateRecord
    from lau.unlearn import LAUResult

    result = LAUResult(3, 1, True, 0.01, candidate="rows", val_retain_drop=-0.2,
                       candidates=(CandidateRecord("rows", 3, True, -0.2, 0.0, 0.01),))
    mlflow_tags = tags(search={**result.tags(), "lau.gate": "forged"}).to_mlflow()
    assert mlflow_tags["lau.candidate"] == "rows" and mlflow_tags["lau.candidates_tried"] == "rows:ok:-0.2"
    assert mlflow_tags["lau.gate"] == "passed" and mlflow_tags["lau.method"] == "lau"
