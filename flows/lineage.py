"""What a flow checks of the lineage it builds on: a gated champion that honours every erasure, and
the drift of a candidate against the lineage's root."""

from __future__ import annotations

from prefect import task

from tasks.context import Context
from tasks.lineage import verify_champion
from tasks.policy import IO
from tasks.registry import Version


@task(name="check champion's lineage", **IO)
def check_champion(ctx: Context, champion: Version) -> None:
    """Refuse (InfraError: exit 3, nothing registered) a champion the pipeline did not make: no gate
    verdict, an ungated parent chain, an erased class it still serves (tasks/lineage.py)."""
    verify_champion(ctx.registry, ctx.storage, champion)


def root_accuracy(champion: Version | None) -> float | None:
    """The test-retain accuracy of the champion's lineage root (None without a champion)."""
    if champion is None:
        return None
    text = champion.tag("root_test_retain_acc") if champion.tag("root_version") else champion.tag("test_retain_acc")
    try:
        return float(text)
    except ValueError:
        return None


def lineage_metrics(test_retain_acc: float, champion: Version | None) -> dict[str, float]:
    """root_test_retain_acc and root_retain_drop (root minus candidate), when there is a root."""
    root = root_accuracy(champion)
    if root is None:
        return {}
    return {"root_test_retain_acc": root, "root_retain_drop": round(root - test_retain_acc, 4)}
