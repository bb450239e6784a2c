"""Stop S3 or the MLflow server in the middle of a deletion (and restart Prefect under a held lock).

A short outage is ridden out by the I/O tasks' retries (3 retries over ~30 s, tasks.policy.IO): the
flow completes. A long one ends `lau` with exit 3 and one line on stderr, and leaves the request
retryable (failed, or running when S3 itself could not take the record); once the service is back,
`lau process` completes it. The services are SIGKILLed (their pid files under .stack/pids/) and
brought back with `python -m infra.stack up`, always, whatever the test saw.

The tests run in file order on one model, so each deletion also builds on the ones before it.
The last one restarts the Prefect server under a held model lock: the holder still releases it.
"""

from __future__ import annotations

import threading

import pytest
from reliability_harness import (
    RETRYABLE,
    champion,
    check_invariants,
    forgotten,
    ledger,
    needs_stack,
    outage,
    unique,
    versions,
)

pytestmark = [needs_stack, pytest.mark.reliability, pytest.mark.slow, pytest.mark.disruptive]

GATE_PASSED = r"Task run 'verification gate.* Completed"  # next: plots, read champion, register
REGISTERED = r"Task run 'register version.* Completed"  # next: promotion (MLflow), the report (S3)
RETRY_1 = r"Task run failed with exception: InfraError.* Retry 1/3 will start"  # after a task name


@pytest.fixture(scope="module")
def model(copy_of_reference) -> str:  # noqa: ANN001
    return copy_of_reference("rel-outage")


def outlast(live, service: str, title: str, model: str) -> tuple[str, dict]:  # noqa: ANN001
    """Keep ``service`` down until the running `lau` gives up: it exits 3 with one error line, no
    traceback, naming ``title``. Returns the request id and its ledger record."""
    with outage(service):
        run = live.finish(timeout=240)
    assert run.code == 3, run.describe()
    assert run.error_lines == [run.lines[-1]], run.describe()
    assert "Traceback" not in run.stderr
    assert title in run.error_lines[0]
    (request_id,) = run.request_ids
    return request_id, ledger(model)[request_id]


def test_short_outages_of_s3_then_mlflow_are_ridden_out(workspace, model: str, promised: dict,  # noqa: ANN001
                                                         tmp_path) -> None:  # noqa: ANN001
    """One deletion meets both: S3 goes down as the candidate is registered (its artifacts go to S3
    through the MLflow server), MLflow right after the registration; each comes back after the
    first failed try. The flow pauses once registered (``LAU_FAULT=registered:pause``) until MLflow
    is down: its next calls take half a second, less than stopping MLflow does."""
    resume = tmp_path / "resume"
    live = workspace.start("forget", "--classes", "3", "--json", model=model, LAU_FAULT="registered:pause",
                           LAU_FAULT_RESUME=str(resume))
    assert live.wait_for(GATE_PASSED), live.stderr[-3000:]
    with outage("s3"):
        assert live.wait_for(r"Task run 'register version.*" + RETRY_1), live.stderr[-3000:]
    assert live.wait_for(REGISTERED), live.stderr[-3000:]
    assert live.wait_for(r"\[fault\] LAU_FAULT=registered: paused"), live.stderr[-3000:]
    with outage("mlflow"):  # the next registry call fails: reading the champion, or promoting
        resume.touch()
        assert live.wait_for(r"Task run '(?!register version)[^']*' - " + RETRY_1), live.stderr[-3000:]
    run = live.finish()
    assert run.code == 0, run.describe()
    summary = run.json()
    assert summary["status"] == "registered"
    promised[summary["request_id"]] = [3]
    check_invariants(model, promised)


def test_a_long_s3_outage_exits_3_and_leaves_the_request_retryable(workspace, model: str,
                                                                     promised: dict) -> None:  # noqa: ANN001
    live = workspace.start("forget", "--classes", "1", "--json", model=model)
    assert live.wait_for(REGISTERED), live.stderr[-3000:]
    # S3 down until `lau` gives up: promoted (MLflow), then the report fails (S3)
    request_id, record = outlast(live, "s3", "S3", model)
    assert record["status"] in RETRYABLE, record
    serving = champion(model)  # promoted before the outage: sound, and it has forgotten class 1
    assert serving.tags["lau.gate"] == "passed" and 1 in forgotten(serving)
    promised[request_id] = [1]


def test_a_long_mlflow_outage_exits_3_and_leaves_the_request_retryable(workspace, model: str,
                                                                         promised: dict) -> None:  # noqa: ANN001
    before = [v.version for v in versions(model)]
    live = workspace.start("forget", "--classes", "7", "--json", model=model)
    assert live.wait_for(GATE_PASSED), live.stderr[-3000:]
    request_id, record = outlast(live, "mlflow", "MLflow", model)
    assert record["status"] == "failed" and "MLflow" in record["error"], record
    assert [v.version for v in versions(model)] == before, "a version was registered during the outage"
    promised[request_id] = [7]


def test_process_completes_what_the_long_outages_left(workspace, model: str, promised: dict) -> None:  # noqa: ANN001
    retryable = {r for r, rec in ledger(model).items() if rec["status"] in RETRYABLE}
    assert len(retryable) == 2, retryable
    promoted_before = champion(model).version  # the long S3 outage's version, promoted already
    run = workspace.lau("process", "--json", model=model)
    assert run.code == 0, run.describe()
    assert {s["request_id"] for s in run.json()} == retryable
    records = check_invariants(model, promised)
    s3_request = next(r for r, classes in promised.items() if classes == [1])
    assert records[s3_request]["version"] == promoted_before, "the promoted version was made again"


def test_a_prefect_restart_does_not_leave_a_model_locked() -> None:
    """Prefect's default keeps concurrency leases in memory: a restart orphaned the held slot and the
    model stayed locked for good. The stack keeps them on disk (infra/stack/services.py, LEASE_STORAGE)."""
    from prefect.client.orchestration import get_client

    from flows.lock import lock_name, model_lock

    model, held, release, errors = unique("rel-prefect"), threading.Event(), threading.Event(), []

    def hold() -> None:
        try:
            with model_lock(model):
                held.set()
                release.wait(60)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(60), errors
    with outage("prefect"):
        pass
    release.set()
    holder.join(60)
    with get_client(sync_client=True) as client:
        active = client.read_global_concurrency_limit_by_name(lock_name(model)).active_slots
        client.delete_global_concurrency_limit_by_name(lock_name(model))
    assert active == 0, f"{lock_name(model)} still has {active} slot taken after its holder left"
