"""What a flow checks of the lineage it builds on: a gated champion that honours every erasure, and
the drift of a candidate against the lineage's root."""

from __future__ import annotations

import functools

import mlflow
from mlflow import MlflowClient
from prefect import task

from tasks.context import Context
from tasks.lineage import verify_champion
from tasks.policy import IO
from tasks.registry import MlflowRefused, Version, mlflow_errors


@task(name="check champion's lineage", **IO)
def check_champion(ctx: Context, champion: Version) -> None:
    """Refuse (InfraError: exit 3, nothing registered) a champion the pipeline did not make: no gate
    verdict, an ungated parent chain, an erased class it still serves (tasks/lineage.py)."""
    verify_champion(ctx.registry, ctx.storage, champion)


@task(name="lineage root's accuracy on the retained classes", **IO)
def root_accuracy(ctx: Context, champion: Version | None, retained: tuple[int, ...]) -> float | None:
    """The test accuracy of the champion's lineage root on exactly the ``retained`` classes (None
    without a champion): the drift bound compares like with like. Forgetting an easy class lowers
    the average of the classes left, without any damage to them; an average over the root's own
    classes would count that as drift. Read from the root's test confusion matrix (its evidence)."""
    if champion is None:
        return None
    root = champion if champion.root_version == champion.version else ctx.registry.get(champion.root_version)
    confusion = _root_confusion(ctx, root)
    if confusion is None:  # a version registered without evidence: its recorded average
        return _float(champion.tag("root_test_retain_acc") if champion.tag("root_version")
                      else champion.tag("test_retain_acc"))
    return retained_accuracy(confusion, retained)


def retained_accuracy(confusion: tuple[tuple[int, ...], ...], retained: tuple[int, ...]) -> float | None:
    """Accuracy (%) over the test images of the ``retained`` classes, from a confusion matrix
    (rows: true class); None when they have no image."""
    rows = [c for c in retained if c < len(confusion)]
    total = sum(sum(confusion[c]) for c in rows)
    return round(100.0 * sum(confusion[c][c] for c in rows) / total, 4) if total else None


def lineage_metrics(root_test_retain_acc: float | None, test_retain_acc: float) -> dict[str, float]:
    """root_test_retain_acc and root_retain_drop (root minus candidate), when there is a root."""
    if root_test_retain_acc is None:
        return {}
    return {"root_test_retain_acc": root_test_retain_acc,
            "root_retain_drop": round(root_test_retain_acc - test_retain_acc, 4)}


@functools.lru_cache(maxsize=64)
def _evidence_confusion(run_id: str) -> tuple[tuple[int, ...], ...] | None:
    """A version's test confusion matrix from its evidence (immutable: cached per run)."""
    try:
        with mlflow_errors():
            if "evaluation.json" not in {f.path for f in MlflowClient().list_artifacts(run_id)}:
                return None  # a version registered by hand, without evidence
            evidence = mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation.json")
    except MlflowRefused:
        return None
    matrix = ((evidence.get("evaluation") or {}).get("after") or {}).get("confusion_test")
    return tuple(tuple(int(v) for v in row) for row in matrix) if matrix else None


def _root_confusion(ctx: Context, root: Version) -> tuple[tuple[int, ...], ...] | None:
    return _evidence_confusion(root.run_id) if root.run_id else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
