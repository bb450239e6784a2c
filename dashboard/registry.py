"""Read-only MLflow for the dashboard: a model's versions, its champion and the champion's
per-class accuracy, cached briefly (versions) or for good (a run's evaluation never changes).

MLflow is imported on first use, not at start: it takes seconds, and /healthz answers meanwhile.
Only search/get calls are made; with LAU_VIEWER_USERNAME set the client logs in as the viewer.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from dashboard.records import VersionRow
from dashboard.s3 import SourceDown

FAILURE_TTL_S = 3.0


@functools.cache
def _mlflow() -> Any:
    # No retries and a short timeout: a dead MLflow must cost a page view a moment, not a minute.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    return mlflow, MlflowClient


def warm_up() -> None:
    """Import MLflow now (call from a background thread at start)."""
    _mlflow()


class Registry:
    """One MLflow server; answers are cached for ``ttl_s`` seconds per model."""

    def __init__(self, tracking_uri: str | None, alias: str, ttl_s: float = 10.0):
        self.uri, self.alias, self.ttl_s = tracking_uri, alias, ttl_s
        self._cache: dict[tuple[str, str], tuple[float, Any, SourceDown | None]] = {}
        self._evaluations: dict[str, dict | None] = {}
        self._lock = threading.Lock()

    def versions(self, model: str) -> list[VersionRow]:
        """Every version of ``model``, oldest first ([] when the model is not registered)."""
        return self._cached(("versions", model), lambda: self._versions(model))

    def champion(self, model: str) -> VersionRow | None:
        """The version the alias points at, or None."""
        return self._cached(("champion", model), lambda: self._champion(model))

    def per_class_test_acc(self, run_id: str) -> tuple[list[float], list[str]] | None:
        """The run's per-class test accuracy (after the deletion, or of the trained model) and its
        class names, from the evaluation.json artifact; None when the run has none."""
        if run_id not in self._evaluations:
            mlflow, _ = _mlflow()
            try:
                self._evaluations[run_id] = mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation.json")
            except Exception as err:  # noqa: BLE001 - mlflow raises several types for one outage
                if _missing(err):
                    self._evaluations[run_id] = None
                else:
                    raise self._down(err) from None
        evaluation = self._evaluations[run_id]
        if not isinstance(evaluation, dict):
            return None
        inner = evaluation["evaluation"] if isinstance(evaluation.get("evaluation"), dict) else evaluation
        accuracies = (inner.get("after") or inner).get("per_class_test_acc")
        if not isinstance(accuracies, list):
            return None
        names = evaluation.get("class_names") or [str(i) for i in range(len(accuracies))]
        # None: the class has no test image in this lineage's data (left out, e.g. erased before training)
        return [0.0 if a is None else float(a) for a in accuracies], [str(n) for n in names]

    def _cached(self, key: tuple[str, str], read: Callable[[], Any]) -> Any:
        """``read()``'s answer, reused for ttl_s; a failure is reused for a few seconds too, so a
        hung MLflow costs one timeout per few seconds, not one per page view."""
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < (self.ttl_s if hit[2] is None else FAILURE_TTL_S):
            if hit[2] is not None:
                raise hit[2]
            return hit[1]
        try:
            value, error = read(), None
        except SourceDown as err:
            value, error = None, err
        with self._lock:
            self._cache[key] = (time.monotonic(), value, error)
        if error is not None:
            raise error
        return value

    def _client(self) -> Any:
        if not self.uri:
            raise SourceDown("MLflow: MLFLOW_TRACKING_URI is not set (source .stack/env)")
        _, client_class = _mlflow()
        return client_class(tracking_uri=self.uri)

    def _versions(self, model: str) -> list[VersionRow]:
        client = self._client()
        try:
            found = client.search_model_versions(f"name = '{model}'", max_results=1000)
        except Exception as err:  # noqa: BLE001
            if _missing(err):
                return []
            raise self._down(err) from None
        return sorted((_row(v) for v in found), key=lambda v: int(v.version) if v.version.isdigit() else 0)

    def _champion(self, model: str) -> VersionRow | None:
        client = self._client()
        try:
            return _row(client.get_model_version_by_alias(model, self.alias))
        except Exception as err:  # noqa: BLE001
            if _missing(err):
                return None
            raise self._down(err) from None

    def _down(self, err: Exception) -> SourceDown:
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        return SourceDown(f"MLflow at {self.uri} failed: {first}")


def _row(mv: Any) -> VersionRow:
    created = (dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC)
               if mv.creation_timestamp else None)
    return VersionRow(mv.name, str(mv.version), mv.run_id or "", created, dict(mv.tags or {}))


def _missing(err: Exception) -> bool:
    """MLflow's answer for 'no such model / alias / artifact' (not an outage)."""
    code = getattr(err, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND") or \
        "No such file or directory" in str(err)


def tamper_problem(champion: VersionRow, versions: Iterable[VersionRow], erased: Iterable[int]) -> str | None:
    """Why the champion fails the pipeline's tamper check (tasks.lineage), or None when it passes.
    Without tasks.lineage: a champion whose lau.gate tag is not 'passed' or that has no lau.* tags."""
    check = _lineage_check()
    if check is not None:
        return check(champion, list(versions), list(erased))
    if not champion.has_lau_tags:
        return "it has no lau.* tags (registered outside the pipeline?)"
    if champion.tag("gate") != "passed":
        return f"it has lau.gate={champion.tag('gate')!r}, not 'passed'"
    return None


@functools.cache
def _lineage_check() -> Callable[..., str | None] | None:
    try:
        from tasks.lineage import lineage_problem  # type: ignore[import-not-found]
    except ImportError:
        return None
    return lineage_problem
