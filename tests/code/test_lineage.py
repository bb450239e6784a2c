"""Tamper evidence (tasks/lineage.py): a champion whose tags do not show a gated lineage is refused
with one line naming the problem; the lineages the pipeline makes pass."""

from __future__ import annotations

import json

import pytest

from tasks.lineage import check_lineage, lineage_problem
from tasks.registry import Version
from tasks.settings import InfraError


def version(number: int, parent: int | None = None, forgotten: tuple[int, ...] = (), excluded: tuple[int, ...] = (),
            **overrides: str) -> Version:
    """A version tagged as the pipeline tags it (train: no parent; forget: a parent)."""
    tags = {"lau.gate": "passed", "lau.parent_version": "" if parent is None else str(parent),
            "lau.forgotten_classes": json.dumps(list(forgotten)), "lau.excluded_classes": json.dumps(list(excluded)),
            "lau.weights_sha256": f"{number:064x}", "lau.method": "train" if parent is None else "lau"}
    tags.update({f"lau.{k}": v for k, v in overrides.items()})
    tags = {k: v for k, v in tags.items() if v is not None}
    return Version("m", str(number), f"run{number}", tags)


def without(v: Version, key: str) -> Version:
    return Version(v.name, v.version, v.run_id, {k: x for k, x in v.tags.items() if k != f"lau.{key}"})


ROOT = version(1)
FORGET_3 = version(2, parent=1, forgotten=(3,))
FORGET_3_5 = version(3, parent=2, forgotten=(3, 5))
RETRAINED = version(4, excluded=(3, 5))  # `lau train` after the deletions: the classes left the data
CHAIN = [ROOT, FORGET_3, FORGET_3_5, RETRAINED]


@pytest.mark.parametrize("champion, erased", [(ROOT, ()), (FORGET_3, (3,)), (FORGET_3_5, (3, 5)),
                                              (RETRAINED, (3, 5))])
def test_the_lineages_the_pipeline_makes_pass(champion: Version, erased: tuple[int, ...]) -> None:
    assert lineage_problem(champion, CHAIN, erased) is None
    check_lineage(champion, CHAIN, erased)


@pytest.mark.parametrize("champion, versions, erased, named", [
    (without(FORGET_3_5, "gate"), CHAIN, (3, 5), "lau.gate=''"),
    (version(5, parent=3, forgotten=(3, 5), gate="rejected"), CHAIN, (3, 5), "lau.gate='rejected'"),
    (without(FORGET_3_5, "weights_sha256"), CHAIN, (3, 5), "lau.weights_sha256"),
    (FORGET_3, CHAIN, (3, 5), "erased class(es) [5]"),
    (ROOT, CHAIN, (3,), "erased class(es) [3]"),
    (version(5, parent=9, forgotten=(3,)), CHAIN, (3,), "lau.parent_version 9, which does not exist"),
    (version(5, parent=2, forgotten=(3, 5)), [ROOT, without(FORGET_3, "gate")], (3,), "ancestor version 2"),
    (version(5, parent=3, forgotten=(5,), excluded=(3,)), CHAIN, (3, 5), "no longer forgets class(es) [3]"),
    (version(5, parent=6, forgotten=(3,)), [version(5, parent=6, forgotten=(3,)), version(6, parent=5, forgotten=(3,))],
     (3,), "loops"),
])
def test_a_champion_without_a_gated_lineage_is_refused_in_one_line(champion: Version, versions: list[Version],
                                                                   erased: tuple[int, ...], named: str) -> None:
    assert named in (lineage_problem(champion, versions, erased) or "")
    with pytest.raises(InfraError) as refused:
        check_lineage(champion, versions, erased)
    message = str(refused.value)
    assert "\n" not in message and f"version {champion.version} of 'm'" in message and named in message
