"""Authentication on the real local stack (`make up`): who may read, who may change the registry.

- nobody without credentials: MLflow's REST API and Prefect's API answer 401, S3 refuses
  (tests/reliability/test_secrets.py: requests without keys; test_stack.py: wrong keys);
- the viewer (LAU_VIEWER_*): reads the champion; moving the alias, registering, tagging, deleting
  answer 403; its S3 identity reads and lists, never writes;
- the pipeline (MLFLOW_TRACKING_*, what `lau` uses): all of it, on models made before
  authentication too (a stack upgraded from an older version keeps working).

Needs the stack up and its settings in the environment: `make up && source .stack/env`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from infra import stack
from tests.integration.conftest import requires_stack

pytestmark = [pytest.mark.integration, requires_stack]

API = "/api/2.0/mlflow"


@dataclass(frozen=True)
class Model:
    name: str
    run_id: str
    source: str


def mlflow_url(path: str) -> str:
    return os.environ["MLFLOW_TRACKING_URI"] + path


def as_user(who: str) -> tuple[str, str] | None:
    """HTTP basic credentials of the pipeline, the viewer, the admin, or nobody (None)."""
    creds = stack.load_config(os.environ).creds
    return {"pipeline": (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]),
            "viewer": (os.environ["LAU_VIEWER_USERNAME"], os.environ["LAU_VIEWER_PASSWORD"]),
            "admin": (stack.MLFLOW_ADMIN, creds.mlflow_admin_password)}.get(who)


def call(who: str, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(method, mlflow_url(path), auth=as_user(who), timeout=30, **kwargs)


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    """A registered model the pipeline made: version 1 is the champion, tagged lau.gate=passed."""
    name = f"auth-{uuid.uuid4().hex[:10]}"
    experiment = call("pipeline", "POST", f"{API}/experiments/create", json={"name": f"lau/{name}"})
    assert experiment.status_code == 200, experiment.text
    run = call("pipeline", "POST", f"{API}/runs/create", json={"experiment_id": experiment.json()["experiment_id"]})
    run_id = run.json()["run"]["info"]["run_id"]
    made = Model(name, run_id, f"runs:/{run_id}/model")
    assert call("pipeline", "POST", f"{API}/registered-models/create", json={"name": name}).status_code == 200
    version = call("pipeline", "POST", f"{API}/model-versions/create",
                   json={"name": name, "source": made.source, "run_id": run_id,
                         "tags": [{"key": "lau.gate", "value": "passed"}]})
    assert version.status_code == 200, version.text
    assert set_alias("pipeline", made, "1").status_code == 200
    yield made
    call("admin", "DELETE", f"{API}/registered-models/delete", json={"name": name})


def set_alias(who: str, model: Model, version: str) -> requests.Response:
    return call(who, "POST", f"{API}/registered-models/alias",
                json={"name": model.name, "alias": "champion", "version": version})


def champion(who: str, model: Model) -> requests.Response:
    return call(who, "GET", f"{API}/registered-models/alias", params={"name": model.name, "alias": "champion"})


# ---------------------------------------------------------------- nobody


@pytest.mark.parametrize("who", ["nobody", "wrong password"])
def test_mlflow_answers_401_without_the_right_credentials(who: str, model: Model) -> None:
    auth = None if who == "nobody" else (os.environ["MLFLOW_TRACKING_USERNAME"], "not-the-password")
    for method, path, body in [("GET", f"{API}/registered-models/search", None),
                               ("POST", f"{API}/registered-models/alias",
                                {"name": model.name, "alias": "champion", "version": "1"})]:
        answer = requests.request(method, mlflow_url(path), auth=auth, json=body, timeout=30)
        assert answer.status_code == 401, (path, answer.status_code)


@pytest.mark.parametrize("auth", [None, "lau:not-the-password"])
def test_prefect_answers_401_without_the_auth_string(auth: str | None) -> None:
    import base64

    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    api = os.environ["PREFECT_API_URL"]
    for method, path in [("POST", "/flows/filter"), ("POST", "/deployments/filter"), ("GET", "/admin/version")]:
        answer = requests.request(method, api + path, headers=headers, json={} if method == "POST" else None,
                                  timeout=30)
        assert answer.status_code == 401, (path, answer.status_code)
    assert requests.post(api + "/flows/filter", json={}, timeout=30,
                         headers={"Authorization": "Basic " + base64.b64encode(
                             os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()}).status_code == 200


# ---------------------------------------------------------------- the viewer


def test_the_viewer_reads_the_champion(model: Model) -> None:
    answer = champion("viewer", model)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"]["version"] == "1"
    assert call("viewer", "GET", f"{API}/model-versions/search",
                params={"filter": f"name='{model.name}'"}).status_code == 200


def test_the_viewer_cannot_change_the_registry(model: Model) -> None:
    """Moving the alias, registering a version, tagging, deleting a tag, a version or the model: 403.
    Afterwards the pipeline finds everything as it was."""
    attempts = {
        "set the alias": ("POST", "/registered-models/alias", {"name": model.name, "alias": "champion", "version": "1"}),
        "delete the alias": ("DELETE", "/registered-models/alias", {"name": model.name, "alias": "champion"}),
        "register a version": ("POST", "/model-versions/create",
                               {"name": model.name, "source": model.source, "run_id": model.run_id}),
        "set a tag": ("POST", "/model-versions/set-tag",
                      {"name": model.name, "version": "1", "key": "lau.gate", "value": "forged"}),
        "delete a tag": ("DELETE", "/model-versions/delete-tag", {"name": model.name, "version": "1", "key": "lau.gate"}),
        "delete a version": ("DELETE", "/model-versions/delete", {"name": model.name, "version": "1"}),
        "delete the model": ("DELETE", "/registered-models/delete", {"name": model.name}),
    }
    answers = {what: call("viewer", method, API + path, json=body).status_code
               for what, (method, path, body) in attempts.items()}
    assert answers == dict.fromkeys(attempts, 403)
    kept = champion("pipeline", model).json()["model_version"]
    assert kept["version"] == "1" and {"key": "lau.gate", "value": "passed"} in kept["tags"]


def test_the_viewer_s3_identity_reads_but_never_writes() -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    viewer = boto3.client("s3", endpoint_url=os.environ["LAU_S3_ENDPOINT"], region_name="us-east-1",
                          aws_access_key_id=os.environ["LAU_VIEWER_AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=os.environ["LAU_VIEWER_AWS_SECRET_ACCESS_KEY"],
                          config=Config(retries={"total_max_attempts": 1}))
    pipeline = boto3.client("s3", endpoint_url=os.environ["LAU_S3_ENDPOINT"], region_name="us-east-1")
    bucket, key = os.environ["LAU_BUCKET"], f"tests/auth/{uuid.uuid4().hex}.json"
    pipeline.put_object(Bucket=bucket, Key=key, Body=b"{}")
    try:
        assert viewer.get_object(Bucket=bucket, Key=key)["Body"].read() == b"{}"
        assert key in [o["Key"] for o in viewer.list_objects_v2(Bucket=bucket, Prefix="tests/auth/")["Contents"]]
        for write in (lambda: viewer.put_object(Bucket=bucket, Key=key, Body=b"forged"),
                      lambda: viewer.delete_object(Bucket=bucket, Key=key)):
            with pytest.raises(ClientError) as refused:
                write()
            assert refused.value.response["Error"]["Code"] in {"AccessDenied", "403"}
        assert pipeline.get_object(Bucket=bucket, Key=key)["Body"].read() == b"{}"
    finally:
        pipeline.delete_object(Bucket=bucket, Key=key)


# ---------------------------------------------------------------- the pipeline


def test_the_pipeline_manages_a_model_it_did_not_create() -> None:
    """A registered model made by someone else (here the admin; in an upgraded stack, anyone before
    authentication existed): the pipeline registers, tags and promotes on it all the same."""
    name = f"auth-older-{uuid.uuid4().hex[:8]}"
    assert call("admin", "POST", f"{API}/registered-models/create", json={"name": name}).status_code == 200
    try:
        experiment = call("pipeline", "POST", f"{API}/experiments/create", json={"name": f"lau/{name}"})
        run = call("pipeline", "POST", f"{API}/runs/create", json={"experiment_id": experiment.json()["experiment_id"]})
        run_id = run.json()["run"]["info"]["run_id"]
        created = call("pipeline", "POST", f"{API}/model-versions/create",
                       json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id})
        assert created.status_code == 200, created.text
        made = Model(name, run_id, "")
        assert set_alias("pipeline", made, "1").status_code == 200
        assert call("pipeline", "POST", f"{API}/model-versions/set-tag",
                    json={"name": name, "version": "1", "key": "lau.gate", "value": "passed"}).status_code == 200
        assert call("pipeline", "DELETE", f"{API}/model-versions/delete-tag",
                    json={"name": name, "version": "1", "key": "lau.gate"}).status_code == 200
    finally:
        call("admin", "DELETE", f"{API}/registered-models/delete", json={"name": name})
