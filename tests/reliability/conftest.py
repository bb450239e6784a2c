"""Fixtures of the reliability suite: one model trained through `lau train` for the whole session;
each module works on its own copies of it (``reliability_harness.clone_model``), so that what one test breaks
no other test sees.

Needs the local stack: `make up && source .stack/env` (`make test` does both).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from reliability_harness import Run, Workspace, clone_model, params_text, unique

# Small and quick, deterministic: 100 images per class (800 train / 200 test), 4 epochs, its own
# seed (so no other suite's model shares its feature cache). The gate keeps forget accuracy at 0 %
# and allows 5 points of retain drop (200 test images: one image is 0.5 points), so that no test
# depends on a lucky retain accuracy; unlearn.max_epochs bounds a slow deletion.
PARAMS = params_text(data={"max_per_class": 100}, train={"epochs": 4, "seed": 7},
                     gate={"max_retain_drop": 5.0}, unlearn={"max_epochs": 40})


@dataclass(frozen=True)
class Reference:
    """The session's trained model (never changed: tests change copies of it)."""

    model: str
    workspace: Workspace
    train_run: Run


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    workspace = Workspace.create(tmp_path_factory.mktemp("reference"), PARAMS)
    model = unique("rel-ref")
    run = workspace.lau("train", "--json", model=model, timeout=600)
    assert run.code == 0, run.describe()
    return Reference(model, workspace, run)


@pytest.fixture(scope="module")
def workspace(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A module's own params.yaml (fresh) sharing the reference's work dir (its caches)."""
    return Workspace.create(tmp_path_factory.mktemp("module"), PARAMS, work=reference.workspace.work)


@pytest.fixture(scope="module")
def copy_of_reference(reference: Reference):  # noqa: ANN201 - a factory: prefix -> model name
    """``copy_of_reference("rel-kill")``: a new registered model whose champion is the reference's."""

    def make(prefix: str) -> str:
        name = unique(prefix)
        clone_model(reference.model, name)
        return name

    return make


@pytest.fixture(scope="module")
def promised() -> dict[str, list[int]]:
    """request id -> classes that must end up forgotten, filled by a module's tests as they go (those
    that run in file order on one model, each deletion building on the ones before it)."""
    return {}
