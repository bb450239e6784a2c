"""The deployments of prefect.yaml on a real work pool: a worker picks up the scheduled `process
pending deletions` run and it completes a request filed with `lau request add`; then the
`consolidate` deployment, run from the pool, retrains on the cleaned data and its audit report
shows the erased class's probe residual before (the LAU champion) and after (the retrain).

Against the stack's Prefect server, with everything private to the test: its own pool, deployment
names, model name, params.yaml and work dir. The worker is started the way `LAU_WORKER=1 make up`
starts it (infra.stack), with its pid and log under a temporary stack folder, and stopped at the end.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import REPO, Workspace, make_workspace, requires_stack

pytestmark = [pytest.mark.workpool, pytest.mark.slow, pytest.mark.integration, requires_stack]

PREFECT = str(Path(sys.executable).with_name("prefect"))
INTERVAL_S = 10  # the test's schedule: a run every 10 s, paused as soon as the first one starts
RUN_TIMEOUT_S = 150


def prefect_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([PREFECT, *args], capture_output=True, text=True, timeout=180, cwd=REPO,
                          env={**env, "PREFECT_CLI_PROMPT": "false"})
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def private_prefect_yaml(ws: Workspace, pool: str, suffix: str, folder: Path) -> tuple[Path, dict[str, str]]:
    """prefect.yaml as it is, but on the test's pool, under the test's deployment names, for the
    test's model, with the nightly cron replaced by a short interval."""
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = {}
    for deployment in config["deployments"]:
        original = deployment["name"]
        names[original] = deployment["name"] = f"{original}-{suffix}"
        deployment["work_pool"] = {**deployment["work_pool"], "name": pool}
        deployment["parameters"] = {**deployment["parameters"], "model_name": ws.model,
                                    "params_path": str(ws.params)}
        if original == "consolidate":
            deployment["schedules"] = []  # the test starts it itself, after the deletion
        elif deployment["schedules"]:
            deployment["schedules"] = [{"interval": INTERVAL_S, "timezone": "UTC"}]
    path = folder / "prefect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, names


def test_worker_runs_the_scheduled_deployment_and_completes_a_pending_request(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from infra import stack

    began = time.monotonic()
    # A small model (2 epochs, 150 images per class): the gate is widened, as this test is about
    # who runs the deletion, not about how well it unlearns (tests/model and test_flows cover that).
    ws = make_workspace(tmp_path / "ws", "it-pool", train={"epochs": 2}, data={"max_per_class": 150},
                        gate={"max_retain_drop": 10.0, "max_total_retain_drop": 10.0})
    trained = ws.lau("train", "--json")
    assert trained.code == 0, trained.stderr[-2000:]
    filed = ws.lau("request", "add", "--classes", "3", "--reason", "workpool test", "--json")
    assert filed.code == 0, filed.stderr[-2000:]
    request_id = filed.json()["request_id"]

    suffix = uuid.uuid4().hex[:8]
    pool = f"lau-test-{suffix}"
    env = ws.env(PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="0")
    cfg = dataclasses.replace(stack.load_config(env), stack_dir=tmp_path / "stack", work_pool=pool)
    worker = next(s for s in stack.services(cfg) if s.name == "worker")
    deployment_ids = []
    prefect_cli("work-pool", "create", pool, "--type", "process", env=env)
    try:
        prefect_file, names = private_prefect_yaml(ws, pool, suffix, tmp_path)
        prefect_cli("deploy", "--all", "--prefect-file", str(prefect_file), "--no-prompt", env=env)
        with get_client(sync_client=True) as client:
            scheduled = client.read_deployment_by_name(f"process pending deletions/{names['process-pending']}")
            on_demand = client.read_deployment_by_name(f"deletion/{names['deletion']}")
            weekly = client.read_deployment_by_name(f"consolidate/{names['consolidate']}")
            deployment_ids = [scheduled.id, on_demand.id, weekly.id]
            assert scheduled.work_pool_name == pool and scheduled.entrypoint == "flows/deletion.py:process_pending"
            assert scheduled.parameters["model_name"] == ws.model

            proc = stack.launch(worker, cfg, env)
            stack.wait_healthy(worker, cfg, proc, time.monotonic())
            run = first_finished_run(client, scheduled.id)
            log = worker.log_file(cfg).read_text()[-3000:]
            assert run.state.type.value == "COMPLETED", f"run ended {run.state.name}; worker log:\n{log}"
            consolidation = client.create_flow_run_from_deployment(weekly.id)
            run = wait_final(client, consolidation.id)
            log = worker.log_file(cfg).read_text()[-3000:]
            assert run.state.type.value == "COMPLETED", f"consolidation ended {run.state.name}; worker log:\n{log}"

        shown = ws.lau("request", "show", request_id, "--json")
        assert shown.code == 0, shown.stderr[-2000:]
        record = shown.json()
        assert record["status"] == "registered", (record.get("error"), record.get("metrics"))
        assert record["version"] == "2" and record["forgotten_classes"] == [3]
        check_consolidation(ws)
    finally:
        stack.stop(worker, cfg)
        assert stack.running_pid(worker, cfg) is None
        with get_client(sync_client=True) as client:
            for deployment_id in deployment_ids:
                client.delete_deployment(deployment_id)
            client.delete_work_pool(pool)
    print(f"workpool test took {time.monotonic() - began:.0f} s", file=sys.stderr)


def check_consolidation(ws: Workspace) -> None:
    """Version 3: a retrain on the cleaned data replacing the LAU champion v2; its audit report
    shows the probe residual of class 3 before and after."""
    from mlflow import MlflowClient

    champion = MlflowClient().get_model_version_by_alias(ws.model, "champion")
    assert champion.version == "3" and champion.tags["lau.method"] == "consolidate"
    assert champion.tags["lau.consolidated_from"] == "2" and json.loads(champion.tags["lau.forgotten_classes"]) == [3]
    report = ws.lau("report", "3", "--print")
    assert report.code == 0, report.stderr[-2000:]
    assert "probe_forget_acc before (version 2, LAU)" in report.stdout
    assert "probe_forget_acc after (version 3, retrain)" in report.stdout
    for line in report.stdout.splitlines():
        if "probe_forget_acc before" in line or "probe_forget_acc after" in line:
            assert float(line.rsplit(":", 1)[1]) >= 0, line  # a measured value, not "n/a"


def wait_final(client, flow_run_id, timeout: float = 2 * RUN_TIMEOUT_S):  # noqa: ANN001, ANN201
    """The flow run once it reached a final state (a retrain takes longer than a deletion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.is_final():
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish within {timeout} s")


def first_finished_run(client, deployment_id):  # noqa: ANN001, ANN201 - a Prefect client, a UUID
    """The deployment's first flow run to reach a final state; the schedule is paused once a run
    has started, so that no second run is still going when the worker stops."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs_of = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    deadline, paused = time.monotonic() + RUN_TIMEOUT_S, False
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(deployment_filter=runs_of)
        started = [r for r in runs if r.state and r.state.type.value != "SCHEDULED"]
        if started and not paused:
            client.pause_deployment(deployment_id)
            paused = True
        final = [r for r in started if r.state.is_final()]
        if final:
            return min(final, key=lambda r: r.expected_start_time)
        time.sleep(1)
    states = [(r.name, r.state.name if r.state else None) for r in client.read_flow_runs(deployment_filter=runs_of)]
    raise AssertionError(f"no run of the deployment finished within {RUN_TIMEOUT_S} s: {json.dumps(states)}")
