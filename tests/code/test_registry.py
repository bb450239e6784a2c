"""How MLflow's failures reach the pipeline (tasks/registry.py): one translator for every call."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException, RestException

from tasks.registry import MlflowRefused, mlflow_errors
from tasks.settings import InfraError


def raised(error: Exception) -> Exception:
    with pytest.raises(Exception) as caught, mlflow_errors():
        raise error
    return caught.value


@pytest.mark.parametrize("code", ["UNAUTHENTICATED", "PERMISSION_DENIED"])
def test_refused_credentials_are_an_infrastructure_failure_not_a_missing_model(code: str) -> None:
    """A 401/403 must never read as "no such model" (which would mean: run `lau train`)."""
    err = raised(RestException({"error_code": code, "message": "nope"}))
    assert isinstance(err, InfraError) and "refused the credentials" in str(err)


def test_a_missing_resource_is_a_refusal_the_caller_can_recognise() -> None:
    err = raised(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no version 9"}))
    assert isinstance(err, MlflowRefused) and err.not_found


def test_a_server_failure_is_retryable() -> None:
    err = raised(MlflowException("API request failed with 503"))
    assert isinstance(err, InfraError) and "failed" in str(err)


def test_a_plain_403_answer_is_recognised_too() -> None:
    """MLflow's basic-auth answers some calls with a bare 'Permission denied' (no JSON error)."""
    err = raised(MlflowException("API request to endpoint /api/2.0/mlflow/registered-models/alias failed "
                                 "with error code 403 != 200. Response body: 'Permission denied'"))
    assert isinstance(err, InfraError) and "refused the credentials (HTTP 403)" in str(err)
