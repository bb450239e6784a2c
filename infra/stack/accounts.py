"""MLflow's accounts, made by its admin through the REST API at each `up` (idempotent).

- ``lau-pipeline`` (what `lau` and the flows use): MANAGE on every experiment and registered model,
  the ones made before authentication existed included (a stack upgraded from an older version
  keeps its registry and its pipeline keeps writing to it).
- ``lau-viewer`` (dashboards, data scientists): READ on the same; it cannot move an alias, register,
  tag or delete (HTTP 403).
- ``lau-admin``: MLflow's admin, created at MLflow's first start with the generated password
  (MLflow 3.17 ships none and refuses to start without one); never used by the pipeline.

MLflow's default permission is NO_PERMISSIONS (infra/stack/services.py): another account that an
admin adds sees nothing until granted.
"""

from __future__ import annotations

import json
import urllib.parse

from infra.stack.config import Config, StackError, progress
from infra.stack.credentials import MLFLOW_ADMIN, PIPELINE_USER, VIEWER_USER
from infra.stack.health import http_call

USERS = "/api/2.0/mlflow/users"
PERMISSIONS = "/api/3.0/mlflow/users/permissions"
RESOURCE_TYPES = ("experiment", "registered_model")


def ensure_accounts(cfg: Config) -> None:
    """Create or repair the local stack's pipeline and viewer accounts and their grants."""
    c = cfg.creds
    provision(cfg.url("mlflow"), c.mlflow_admin_password, c.mlflow_pipeline_password, c.mlflow_viewer_password)


def provision(base: str, admin_password: str, pipeline_password: str, viewer_password: str) -> None:
    """The pipeline (MANAGE) and the viewer (READ) on every experiment and registered model of the
    MLflow server at ``base``, as its admin."""
    admin = f"{MLFLOW_ADMIN}:{admin_password}"
    for username, password, permission in ((PIPELINE_USER, pipeline_password, "MANAGE"),
                                           (VIEWER_USER, viewer_password, "READ")):
        ensure_user(base, admin, username, password)
        for resource_type in RESOURCE_TYPES:
            ensure_grant(base, admin, username, resource_type, permission)


def ensure_user(base: str, admin: str, username: str, password: str) -> None:
    """The user exists and logs in with ``password`` (created, or its password reset, if not)."""
    status, _ = http_call(f"{base}{USERS}/current", auth=f"{username}:{password}")
    if status == 200:
        return
    status, _ = http_call(f"{base}{USERS}/get?username={urllib.parse.quote(username)}", auth=admin)
    if status == 200:
        call(base, admin, "PATCH", f"{USERS}/update-password", {"username": username, "password": password})
        progress(f"MLflow account {username}: password reset to the one in .stack/credentials")
    elif status == 404:
        call(base, admin, "POST", f"{USERS}/create", {"username": username, "password": password})
        progress(f"MLflow account {username} created")
    else:
        raise StackError(f"MLflow answered HTTP {status} when looking up the account {username}")


def ensure_grant(base: str, admin: str, username: str, resource_type: str, permission: str) -> None:
    """``username`` holds exactly ``permission`` on every resource of ``resource_type``."""
    current = held(base, admin, username, resource_type)
    if current == permission:
        return
    target = {"username": username, "resource_type": resource_type, "resource_id": "*"}
    if current is not None:
        call(base, admin, "POST", f"{PERMISSIONS}/revoke", target)
    call(base, admin, "POST", f"{PERMISSIONS}/grant", {**target, "permission": permission})
    progress(f"MLflow account {username}: {permission} on every {resource_type.replace('_', ' ')}")


def held(base: str, admin: str, username: str, resource_type: str) -> str | None:
    """The permission of the user's own wildcard grant on a resource type, or None."""
    query = urllib.parse.urlencode({"username": username})
    body = call(base, admin, "GET", f"{PERMISSIONS}/list?{query}")
    for grant in body.get("permissions", []):
        if grant.get("resource_type") == resource_type and grant.get("resource_pattern") == "*":
            return str(grant.get("permission"))
    return None


def call(base: str, admin: str, method: str, path: str, body: dict | None = None) -> dict:
    """One admin request; any answer but 200 is a StackError naming it (never the body's secrets)."""
    status, data = http_call(f"{base}{path}", method, auth=admin, body=body, timeout=30)
    if status == 401:
        raise StackError(f"MLflow rejects {MLFLOW_ADMIN}'s password (.stack/credentials, or "
                         "MLFLOW_AUTH_ADMIN_PASSWORD): its user database holds another one")
    if status != 200:
        try:
            message = json.loads(data).get("message", "")[:200]
        except (ValueError, AttributeError):
            message = ""
        raise StackError(f"MLflow answered HTTP {status} to {method} {path.split('?')[0]}: {message}")
    try:
        return json.loads(data or b"{}")
    except ValueError:
        return {}

