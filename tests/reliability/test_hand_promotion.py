"""A champion promoted by hand, outside the pipeline, is caught, not built upon.

Someone with the MLflow admin's credentials registers a version by hand (the champion's very
checkpoint and tags, all but ``lau.gate``: no gate ever judged it) and moves the ``champion`` alias
to it. The next `lau forget` exits 3 with one line naming the problem and files nothing; a request
filed beforehand and processed by `lau process` (the scheduled path) fails the same way. Nothing is
registered either time (tasks/lineage.py).
"""

from __future__ import annotations

import os

import pytest
from reliability_harness import ledger, needs_stack, versions

from infra import stack

pytestmark = [needs_stack, pytest.mark.reliability, pytest.mark.slow]


@pytest.fixture(scope="module")
def model(copy_of_reference, workspace) -> str:  # noqa: ANN001
    """A copy of the reference model whose champion an admin replaced by hand with an ungated
    version; one request filed before the hand promotion."""
    from mlflow import MlflowClient

    name = copy_of_reference("rel-hand")
    filed = workspace.lau("request", "add", "--classes", "1", model=name)
    assert filed.code == 0, filed.describe()
    admin = {"MLFLOW_TRACKING_USERNAME": stack.MLFLOW_ADMIN,
             "MLFLOW_TRACKING_PASSWORD": stack.load_config(os.environ).creds.mlflow_admin_password}
    with pytest.MonkeyPatch.context() as env:
        for key, value in admin.items():
            env.setenv(key, value)  # the MLflow client reads its credentials at each request
        client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
        gated = client.get_model_version_by_alias(name, "champion")
        tags = {k: v for k, v in gated.tags.items() if k != "lau.gate"}
        by_hand = client.create_model_version(name, gated.source, run_id=gated.run_id, tags=tags,
                                              model_id=gated.source.removeprefix("models:/"))
        client.set_registered_model_alias(name, "champion", by_hand.version)
    return name


def test_lau_forget_refuses_a_hand_promoted_champion_and_files_nothing(model: str, workspace) -> None:  # noqa: ANN001
    before = [v.version for v in versions(model)]
    requests_before = set(ledger(model))
    run = workspace.lau("forget", "--classes", "2", model=model)
    assert run.code == 3, run.describe()
    (line,) = run.error_lines
    assert f"version {before[-1]} of '{model}'" in line and "lau.gate" in line, line
    assert [v.version for v in versions(model)] == before, "nothing may be registered"
    assert set(ledger(model)) == requests_before, "no request may be filed"


def test_lau_process_refuses_it_too_and_leaves_the_request_retryable(model: str, workspace) -> None:  # noqa: ANN001
    before = [v.version for v in versions(model)]
    run = workspace.lau("process", model=model)
    assert run.code == 3, run.describe()
    assert any("lau.gate" in line for line in run.error_lines), run.describe()
    assert [v.version for v in versions(model)] == before, "nothing may be registered"
    (request,) = ledger(model).values()
    assert request["status"] in ("failed", "running") and "lau.gate" in (request["error"] or ""), request
