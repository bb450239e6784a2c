"""How the pipeline is deployed, checked without running it: prefect.yaml, the stack's optional
worker, and the production manifests (infra/production), which are parsed, not started."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.deletion import deletion, process_pending
from flows.lock import LEASE_S
from flows.train import consolidate
from infra import stack
from infra.stack.services import REPOSSESS_S, SLOT_RETRY_S

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "infra" / "production"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|AUTH_STRING|TOKEN", re.IGNORECASE)
COMPOSE_PLACEHOLDER = re.compile(r"\$\{[A-Z][A-Z0-9_]*(:?[?-][^}]*)?\}")  # ${VAR}, ${VAR:?msg}, ${VAR:-default}
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
URL_CREDENTIALS = re.compile(r"://[^/:@\s]+:([^@\s]+)@")  # scheme://user:PASSWORD@host
SHELL_PLACEHOLDER = re.compile(r"\$?\$\{[A-Z][A-Z0-9_]*\}|%s")  # filled from the environment at start


# ---------------------------------------------------------------- prefect.yaml


@pytest.fixture(scope="module")
def prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_prefect_yaml_deploys_the_deletion_flows_and_the_consolidation(prefect_yaml: dict[str, Any]) -> None:
    deployments = {d["name"]: d for d in prefect_yaml["deployments"]}
    assert deployments["process-pending"]["entrypoint"] == "flows/deletion.py:process_pending"
    assert deployments["deletion"]["entrypoint"] == "flows/deletion.py:deletion"
    assert deployments["consolidate"]["entrypoint"] == "flows/train.py:consolidate"
    flows = {"process-pending": process_pending, "deletion": deletion, "consolidate": consolidate}
    for name, deployment in deployments.items():
        assert deployment["work_pool"]["name"] == "lau-process"
        accepted = set(flows[name].parameters.properties)
        assert set(deployment["parameters"]) <= accepted, f"{name}: unknown parameters"


def test_prefect_yaml_schedule_is_params_yaml_schedule(prefect_yaml: dict[str, Any]) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())["schedule"]
    by_name = {d["name"]: d for d in prefect_yaml["deployments"]}
    assert by_name["process-pending"]["schedules"] == [
        {"cron": params["cron"], "timezone": params["timezone"], "active": True}]
    assert by_name["deletion"]["schedules"] == []  # on demand only
    assert by_name["consolidate"]["schedules"] == [
        {"cron": params["consolidate_cron"], "timezone": params["timezone"], "active": True}]


# ---------------------------------------------------------------- the stack's worker


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_lau_worker_adds_a_process_worker_to_the_stack(value: str, tmp_path: Path) -> None:
    env = {"LAU_STACK_DIR": str(tmp_path), "LAU_WORKER": value, "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s"}
    cfg = stack.load_config(env)
    assert [s.name for s in stack.services(cfg)] == ["s3", "mlflow", "prefect", "dashboard", "worker"]
    command = stack.command(stack.services(cfg)[-1], cfg, env)
    assert command[command.index("worker"):][:6] == ["worker", "start", "--pool", "lau-process", "--type", "process"]
    worker_env = stack.service_env(stack.services(cfg)[-1], cfg, env)
    assert worker_env["PREFECT_API_URL"] == f"{cfg.url('prefect')}/api"  # its flow runs reach the stack
    assert worker_env["MLFLOW_TRACKING_URI"] == cfg.url("mlflow")


def test_without_lau_worker_there_is_no_worker_but_down_still_stops_one(tmp_path: Path) -> None:
    cfg = stack.load_config({"LAU_STACK_DIR": str(tmp_path), "LAU_WORKER": "0"})
    assert [s.name for s in stack.services(cfg)] == ["s3", "mlflow", "prefect", "dashboard"]
    assert [s.name for s in stack.services(cfg, every_kind=True)][-1] == "worker"
    with pytest.raises(stack.StackError, match="LAU_WORKER"):
        stack.load_config({"LAU_STACK_DIR": str(tmp_path), "LAU_WORKER": "maybe"})


def test_the_stack_prefect_server_keeps_its_leases_on_disk_in_the_stack_dir(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """In memory (Prefect's default), a server restart under a held model lock loses the lease and
    leaves the slot taken for good; the lease files must live in the stack dir, never in ~."""
    from prefect.settings.models.server.concurrency import ServerConcurrencySettings

    env = {"LAU_STACK_DIR": str(tmp_path), "HOME": str(tmp_path / "home"), "PREFECT_HOME": "/elsewhere"}
    cfg = stack.load_config({**env, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    prefect_env = stack.service_env(stack.services(cfg)[2], cfg, env)
    assert prefect_env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == LEASE_STORAGE
    assert Path(prefect_env["PREFECT_HOME"]).is_relative_to(tmp_path)  # leases: PREFECT_HOME/concurrency_leases
    monkeypatch.setenv("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", LEASE_STORAGE)  # the name Prefect reads
    assert ServerConcurrencySettings().lease_storage == LEASE_STORAGE
    importlib.import_module(LEASE_STORAGE).ConcurrencyLeaseStorage  # noqa: B018 - the module exists


def test_a_dead_holders_lock_frees_within_a_bounded_wait_in_the_stack_and_the_manifests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's defaults (repossessor every 15 s, a denied waiter told to retry after up to 30 s + 30 %)
    let a crashed deletion block its model ~114 s; the stack and the manifests ask for 5 and 5."""
    from prefect.settings.models.server.concurrency import ServerConcurrencySettings
    from prefect.settings.models.server.services import ServerServicesRepossessorSettings

    cfg = stack.load_config({"LAU_STACK_DIR": str(tmp_path), "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    k8s_server = [d for d in kubernetes() if d["kind"] == "Deployment" and d["metadata"]["name"] == "prefect-server"]
    envs = {"stack": stack.service_env(stack.services(cfg)[2], cfg, {"LAU_STACK_DIR": str(tmp_path)}),
            "compose": compose_env(compose()["services"]["prefect-server"]),
            "kubernetes": {e["name"]: e.get("value") for e in containers(k8s_server[0])[0]["env"]}}
    for where, env in envs.items():
        for name in ("PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS",
                     "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS"):
            monkeypatch.setenv(name, env.get(name, ""))  # a missing one fails validation below
        try:
            repossess_s = ServerServicesRepossessorSettings().loop_seconds  # the names Prefect reads
            retry_s = ServerConcurrencySettings().maximum_concurrency_slot_wait_seconds
        except ValueError as err:
            pytest.fail(f"{where}: {err}")
        assert (repossess_s, retry_s) == (REPOSSESS_S, SLOT_RETRY_S), where
        assert LEASE_S + repossess_s + 1.3 * retry_s <= 75, where


# ---------------------------------------------------------------- production manifests


def compose() -> dict[str, Any]:
    return yaml.safe_load((PRODUCTION / "docker-compose.yml").read_text())


def kubernetes() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((PRODUCTION / "kubernetes.yaml").read_text()) if doc]


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return pod.get("containers", []) + pod.get("initContainers", [])


EVERY_SERVICE = {"postgres", "s3", "mlflow", "prefect-server", "prefect-worker"}


def test_compose_runs_every_service_of_the_stack() -> None:
    services = compose()["services"]
    assert EVERY_SERVICE <= set(services)
    assert "--type" in services["prefect-worker"]["command"] and "lau-process" in services["prefect-worker"]["command"]
    assert "postgresql://" in compose_env(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"]
    assert compose_env(services["prefect-server"])["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    assert compose_env(services["mlflow"])["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")


def test_kubernetes_runs_every_service_of_the_stack() -> None:
    workloads = {doc["metadata"]["name"] for doc in kubernetes() if doc["kind"] in ("Deployment", "StatefulSet")}
    services = {doc["metadata"]["name"] for doc in kubernetes() if doc["kind"] == "Service"}
    assert EVERY_SERVICE <= workloads
    assert EVERY_SERVICE - {"prefect-worker"} <= services  # what others connect to has a Service


def test_compose_prefect_server_keeps_its_leases_on_a_volume() -> None:
    services, volumes = compose()["services"], compose()["volumes"]
    env = compose_env(services["prefect-server"])
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == LEASE_STORAGE
    mounts = dict(reversed(m.split(":")[:2]) for m in services["prefect-server"]["volumes"])
    assert mounts[env["PREFECT_HOME"]] in volumes, "PREFECT_HOME (the lease files) is not on a named volume"


def test_kubernetes_prefect_server_keeps_its_leases_on_a_volume() -> None:
    docs = kubernetes()
    (server,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "prefect-server"]
    (container,) = containers(server)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == LEASE_STORAGE
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env["PREFECT_HOME"]]
    (volume,) = [v for v in server["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert volume["persistentVolumeClaim"]["claimName"] in claims
    assert server["spec"]["replicas"] == 1 and server["spec"]["strategy"]["type"] == "Recreate"


def test_compose_holds_no_credentials() -> None:
    """Every secret-looking variable is a ${VAR} placeholder filled from .env, never a value."""
    for name, service in compose()["services"].items():
        for key, value in compose_env(service).items():
            if SECRET_NAME.search(key):
                assert COMPOSE_PLACEHOLDER.fullmatch(value), f"{name}: {key} holds a value, not ${{VAR}}"
    for text in strings(compose()):
        for password in URL_CREDENTIALS.findall(text):  # ${VAR} of .env; $${VAR} or %s: the shell's, at start
            assert COMPOSE_PLACEHOLDER.fullmatch(password) or SHELL_PLACEHOLDER.fullmatch(password), \
                f"a URL embeds a literal password: {text}"


def test_kubernetes_holds_no_credentials() -> None:
    """Every secret-looking variable comes from a secretKeyRef; no Secret object carries data."""
    docs = kubernetes()
    assert not [d for d in docs if d["kind"] == "Secret"], "secrets are generated from .env (kustomization.yaml)"
    for doc in docs:
        for container in containers(doc):
            for entry in container.get("env", []):
                if SECRET_NAME.search(entry["name"]):
                    assert "value" not in entry, f"{doc['metadata']['name']}: {entry['name']} is inline"
                    assert entry["valueFrom"]["secretKeyRef"]["name"] == "lau-secrets"
    for text in strings(docs):
        for password in URL_CREDENTIALS.findall(text):
            assert re.fullmatch(r"\$\([A-Z][A-Z0-9_]*\)", password) or SHELL_PLACEHOLDER.fullmatch(password), \
                f"a URL embeds a literal password: {text}"  # $(VAR): Kubernetes'; ${VAR}: the shell's
    for key, value in yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text()).items():
        if key == "secretGenerator":
            assert all(set(gen) <= {"name", "envs", "files"} for gen in value), "no literals in the generator"


def test_env_example_names_every_secret_and_fills_none() -> None:
    values = dict(line.split("=", 1) for line in (PRODUCTION / "env.example").read_text().splitlines()
                  if line and not line.startswith("#"))
    referenced = set()
    for text in strings(compose()):
        referenced |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    for doc in kubernetes():
        for container in containers(doc):
            referenced |= {e["valueFrom"]["secretKeyRef"]["key"] for e in container.get("env", [])
                           if "secretKeyRef" in e.get("valueFrom", {})}
    assert referenced <= set(values), f"missing from env.example: {sorted(referenced - set(values))}"
    assert all(value == "" for key, value in values.items() if SECRET_NAME.search(key)), "env.example holds a secret"


def test_the_local_stack_never_takes_aws_keys_from_the_shell(tmp_path: Path) -> None:
    """Real AWS keys in the shell must not become the local S3's identity, nor land in .stack/."""
    shell = {"AWS_ACCESS_KEY_ID": "AKIAREALKEY", "AWS_SECRET_ACCESS_KEY": "real-secret"}
    creds = stack.load_credentials(shell, tmp_path, create=True)
    key, secret = creds.access_key, creds.secret_key
    assert (key, secret) != ("AKIAREALKEY", "real-secret") and key and secret
    assert "AKIAREALKEY" not in (tmp_path / "credentials").read_text()
    assert stack.load_credentials(shell, tmp_path, create=False) == creds  # stable
    chosen = {**shell, "LAU_STACK_ACCESS_KEY_ID": "mine", "LAU_STACK_SECRET_ACCESS_KEY": "my-secret"}
    chosen_creds = stack.load_credentials(chosen, tmp_path, create=True)
    assert (chosen_creds.access_key, chosen_creds.secret_key) == ("mine", "my-secret")


def test_a_stack_from_before_authentication_keeps_its_keys_and_gains_the_accounts(tmp_path: Path) -> None:
    """An older .stack/credentials held the S3 keys only: they stay, every other secret is added,
    generated once (the next `up` reads the same), in a file only its owner reads."""
    (tmp_path / "credentials").write_text('{"access_key": "older-key-id", "secret_key": "old-secret"}')
    creds = stack.load_credentials({}, tmp_path, create=True)
    assert (creds.access_key, creds.secret_key) == ("older-key-id", "old-secret")
    assert creds.complete and len(set(creds.secrets())) == len(creds.secrets())  # all there, all different
    assert creds.prefect_auth_string.startswith("lau:")
    assert stack.load_credentials({}, tmp_path, create=True) == creds
    assert (tmp_path / "credentials").stat().st_mode & 0o077 == 0
    exported = stack.env_values(stack.load_config({"LAU_STACK_DIR": str(tmp_path)}))
    assert exported["MLFLOW_TRACKING_USERNAME"] == stack.PIPELINE_USER
    assert exported["MLFLOW_TRACKING_PASSWORD"] == creds.mlflow_pipeline_password
    assert exported["LAU_VIEWER_PASSWORD"] == creds.mlflow_viewer_password
    assert exported["PREFECT_API_AUTH_STRING"] == creds.prefect_auth_string
    assert creds.mlflow_admin_password not in exported.values()  # the admin's is never exported


# ---------------------------------------------------------------- production: authentication


def workloads() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in kubernetes() if d["kind"] in ("Deployment", "StatefulSet", "Job")}


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    return doc["spec"]["template"].get("metadata", {}).get("labels", {})


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions with In) against pod labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def reachable_from(target: str) -> set[str]:
    """The workloads (and "outside" for any other namespace or address) that the NetworkPolicies
    let open a connection to ``target``'s pods."""
    pods = {name: pod_labels(doc) for name, doc in workloads().items()}
    policies = [d["spec"] for d in kubernetes() if d["kind"] == "NetworkPolicy"]
    governing = [p for p in policies if "Ingress" in p["policyTypes"] and selects(p["podSelector"], pods[target])]
    if not governing:
        return set(pods) | {"outside"}
    allowed: set[str] = set()
    for rule in (r for p in governing for r in p.get("ingress", [])):
        for peer in rule.get("from") or [{"ipBlock": {"cidr": "0.0.0.0/0"}}]:
            if "podSelector" in peer and "namespaceSelector" not in peer:
                allowed |= {name for name, labels in pods.items() if selects(peer["podSelector"], labels)}
            else:
                allowed.add("outside")
    return allowed


def test_kubernetes_only_the_pipeline_reaches_mlflow_writes_prefect_s3_and_dask() -> None:
    pipeline = {name for name, doc in workloads().items() if pod_labels(doc).get("lau/role") == "pipeline"}
    assert {"prefect-worker", "dask-worker", "dask-scheduler"} <= pipeline
    assert reachable_from("mlflow") <= pipeline, "MLflow's write API beyond the pipeline's pods"
    assert reachable_from("prefect-server") <= pipeline
    assert reachable_from("dask-scheduler") <= pipeline and reachable_from("dask-worker") <= pipeline
    assert reachable_from("s3") <= pipeline | {"mlflow", "mlflow-read"}
    assert reachable_from("postgres") <= {"mlflow", "mlflow-read", "prefect-server"}


def test_kubernetes_mlflow_and_prefect_ask_for_credentials() -> None:
    """MLflow runs its basic-auth app (nobody sees anything ungranted); the read-only instance uses a
    SELECT-only role; Prefect checks an auth string; every pipeline pod that talks to them has its
    credentials, by reference."""
    found = workloads()
    for name in ("mlflow", "mlflow-read"):
        (container,) = containers(found[name])
        script = " ".join(container["args"])
        assert "--app-name basic-auth" in script and "default_permission = NO_PERMISSIONS" in script, name
        env = {e["name"]: e for e in container["env"]}
        assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "lau-secrets"
    assert "postgresql://mlflow_reader:" in " ".join(containers(found["mlflow-read"])[0]["args"])
    (server,) = containers(found["prefect-server"])
    assert "secretKeyRef" in {e["name"]: e for e in server["env"]}["PREFECT_SERVER_API_AUTH_STRING"]["valueFrom"]
    settings = next(d for d in kubernetes() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "lau-settings")
    assert settings["data"]["MLFLOW_TRACKING_USERNAME"] == stack.PIPELINE_USER
    for name in ("prefect-worker", "dask-worker"):
        (container,) = containers(found[name])
        env = {e["name"]: e for e in container["env"]}
        assert {"PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_PASSWORD"} <= set(env), name


def test_compose_mlflow_and_prefect_ask_for_credentials() -> None:
    services = compose()["services"]
    assert "--app-name basic-auth" in " ".join(services["mlflow"]["command"])
    assert "PREFECT_SERVER_API_AUTH_STRING" in compose_env(services["prefect-server"])
    worker = compose_env(services["prefect-worker"])
    assert worker["MLFLOW_TRACKING_USERNAME"] == stack.PIPELINE_USER and "MLFLOW_TRACKING_PASSWORD" in worker


def test_lau_serve_builds_every_deployment_on_its_cron(tmp_path: Path) -> None:
    """What `lau serve` serves: the three deployments, the nightly and weekly ones on params.yaml's
    crons in its time zone (built, not served: no Prefect server needed)."""
    from flows.deployments import deployments
    from lau.config import Params
    from tasks.context import Context
    from tasks.settings import Settings

    ctx = Context(Params(), Settings(tmp_path / "params.yaml", "lau", None, tmp_path), "m")
    built = {d.name: d for d in deployments(ctx)}
    assert set(built) == {"process-pending-m", "deletion-m", "consolidate-m"}
    crons = {name: [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] for name, d in built.items()}
    assert crons == {"process-pending-m": [("0 2 * * *", "UTC")], "deletion-m": [],
                     "consolidate-m": [("0 3 * * 0", "UTC")]}
