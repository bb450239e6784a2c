"""Tamper evidence at load: a champion is built upon only if its tags show a gated lineage.

Every version the pipeline registers says how it was made: ``lau.gate`` = passed (written only from
a passing gate verdict, tasks/tags.py), ``lau.parent_version`` (the version it was unlearned from,
"" for a trained root), the cumulative ``lau.forgotten_classes`` and the ``lau.excluded_classes`` of
its training data, and ``lau.weights_sha256`` (the checkpoint's hash; Registry.load refuses a
checkpoint that does not match it). A version registered or promoted by hand, outside the pipeline
(an admin, a leaked credential), misses some of that, and the deletion flow refuses to build on it
(InfraError: `lau` exits 3 with the one line, nothing is registered) rather than carry an erased
class forward.

What it cannot see: someone with write access to the registry who forges every tag. That is what
the registry's authentication is for (infra/production/README.md, "Threat model").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tasks.erasures import ErasureRecord
from tasks.s3 import Storage
from tasks.settings import InfraError

if TYPE_CHECKING:  # the dashboard checks versions of its own without importing MLflow or torch
    from tasks.registry import Registry, Version


def lineage_problem(champion: Version, versions: Sequence[Version], erased: Iterable[int]) -> str | None:
    """What is wrong with ``champion``'s lineage, in a few words, or None when it is gated.

    ``versions``: every version of the registered model (Registry.versions()); ``erased``: the
    model's erased classes (ErasureRecord.classes(model)). Pure: no I/O.
    """
    if champion.tag("gate") != "passed":
        return f"it has lau.gate={champion.tag('gate')!r}, not 'passed' (no gate verdict)"
    if not champion.tag("weights_sha256"):
        return "it has no lau.weights_sha256 (its checkpoint cannot be checked)"
    missing = sorted(set(int(c) for c in erased) - set(champion.forgotten) - set(champion.excluded))
    if missing:
        return (f"erased class(es) {missing} are in neither its lau.forgotten_classes "
                f"{list(champion.forgotten)} nor its lau.excluded_classes {list(champion.excluded)}")
    return ancestry_problem(champion, {v.version: v for v in versions})


def ancestry_problem(champion: Version, by_number: dict[str, Version]) -> str | None:
    """The parent chain leads, through gated versions that forget ever more, to a gated root."""
    seen = [champion.version]
    current = champion
    while parent_number := current.tag("parent_version"):
        where = "it" if current is champion else f"its ancestor version {current.version}"
        parent = by_number.get(parent_number)
        if parent is None:
            return f"{where} names lau.parent_version {parent_number}, which does not exist"
        if parent.version in seen:
            return f"its lau.parent_version chain loops ({' -> '.join([*seen, parent.version])})"
        if parent.tag("gate") != "passed":
            return f"its ancestor version {parent.version} has lau.gate={parent.tag('gate')!r}, not 'passed'"
        dropped = sorted(set(parent.forgotten) - set(current.forgotten))
        if dropped:
            return f"{where} no longer forgets class(es) {dropped} that its parent {parent.version} forgot"
        seen.append(parent.version)
        current = parent
    return None  # a gated root: a trained version


def check_lineage(champion: Version, versions: Sequence[Version], erased: Iterable[int]) -> None:
    """Raise InfraError (one line, naming the version and the problem) unless ``champion`` has a
    gated lineage; see lineage_problem."""
    problem = lineage_problem(champion, versions, erased)
    if problem is not None:
        raise InfraError(f"refusing version {champion.version} of '{champion.name}' as "
                         f"champion: {problem}; it was not made by the pipeline's gate (registered or "
                         "promoted by hand?): point the alias back at a gated version")


def verify_champion(registry: Registry, storage: Storage, champion: Version | None = None) -> Version:
    """Read what check_lineage needs (the registry's versions, the S3 erasure record) and check the
    champion (the registry's current one when not given). Returns it."""
    champion = champion or registry.require_champion()
    check_lineage(champion, registry.versions(), ErasureRecord(storage).classes(champion.name))
    return champion
