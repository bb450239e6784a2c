"""No request blocks another: a request that fails for any reason (here, a bug: an unexpected
exception inside the deletion) is recorded `failed` with its error, retryable, and the scheduled
pass goes on to the next request; a later pass completes it."""

from __future__ import annotations

import pytest
from reliability_harness import check_invariants, ledger, needs_stack

pytestmark = [needs_stack, pytest.mark.reliability, pytest.mark.slow]


def test_a_crashing_request_does_not_stop_the_pass(workspace, copy_of_reference) -> None:  # noqa: ANN001
    model = copy_of_reference("rel-noblock")
    filed = {}
    for klass in (3, 5, 1):
        run = workspace.lau("request", "add", "--classes", str(klass), "--json", model=model)
        assert run.code == 0, run.describe()
        filed[run.json()["request_id"]] = [klass]
    first, *others = filed
    run = workspace.lau("process", "--json", model=model, LAU_FAULT="unlearn:crash", LAU_FAULT_REQUEST=first)
    assert run.code == 3, run.describe()  # the worst outcome of the pass: one request failed
    assert run.error_lines == [run.lines[-1]] and first in run.error_lines[0] and "Traceback" not in run.stderr
    results = {r["request_id"]: r for r in run.json()}
    assert list(results) == [first, *others]  # oldest first, and every one of them in this pass
    assert results[first]["status"] == "failed" and "injected crash at 'unlearn'" in results[first]["error"]
    assert all(results[r]["status"] == "registered" for r in others)
    assert ledger(model)[first]["status"] == "failed"

    again = workspace.lau("process", "--json", model=model)
    assert again.code == 0, again.describe()
    assert [(r["request_id"], r["status"]) for r in again.json()] == [(first, "registered")]
    check_invariants(model, filed)
