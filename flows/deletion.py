"""The deletion flow: load the champion, read cached features, LAU, evaluate, gate, and only then
register, promote and record; or reject with the failed checks and change nothing.

`deletion` runs one request now; `process_pending` runs every retryable request of a model (the
scheduled deployment). Both hold the model's lock, so one deletion runs at a time per model, and a
request already final is returned as it is: each request is processed exactly once.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from prefect import flow

from flows.lock import model_lock
from lau.errors import BadInput
from lau.gate import Verdict
from lau.report import PROBE_NOTE
from lau.utils import progress
from tasks.common import Context, fault_point
from tasks.features import cached_features
from tasks.ledger import FINAL, Request, json_safe, now, read_request, record, retryable_requests
from tasks.lineage import verify_champion
from tasks.model import evaluate, gate, unlearn
from tasks.params_file import exclude_classes
from tasks.publish import find_version, load_champion, promote, read_champion, read_evaluation, register, tag
from tasks.registry import Version, code_commit
from tasks.reports import audit_report, dashboard, plots
from tasks.settings import InfraError

REDO_LIMIT = 3


@flow(name="deletion", flow_run_name="forget {request_id}")
def deletion(request_id: str, model_name: str | None = None, max_retain_drop: float | None = None,
             params_path: str | None = None) -> dict[str, Any]:
    """Process one deletion request now, under the model's lock."""
    ctx = Context.load(model_name, params_path)
    with model_lock(ctx.model_name):
        return handle_request(ctx, request_id, max_retain_drop)


@flow(name="process pending deletions", flow_run_name="process {model_name}")
def process_pending(model_name: str | None = None, params_path: str | None = None) -> list[dict[str, Any]]:
    """One pass over every pending (or interrupted) request of a model, oldest first."""
    ctx = Context.load(model_name, params_path)
    with model_lock(ctx.model_name):
        return [handle_request(ctx, request.request_id) for request in retryable_requests(ctx)]


def handle_request(ctx: Context, request_id: str, max_retain_drop: float | None = None) -> dict[str, Any]:
    """Take a request to a final status (or back to a retryable one on an infrastructure failure)."""
    start = time.perf_counter()
    request = read_request(ctx, request_id)
    if request.status in FINAL:
        progress(f"[deletion] {request_id} is already {request.status}; nothing to do")
        return json_safe(request.summary())
    request = record(ctx, request, "running", f"attempt {request.attempts + 1}",
                     attempts=request.attempts + 1, error=None)
    try:
        existing = find_version(ctx, request.request_id)
        if existing is not None:  # a crashed run registered it: finish what it started
            progress(f"[deletion] {request_id} already produced version {existing.version}; completing")
            evaluation = read_evaluation(ctx, existing)
            outcome = complete(ctx, request, existing, evaluation, None, start)
            if outcome is not None:
                return outcome
        for _ in range(REDO_LIMIT):
            outcome = attempt(ctx, request, max_retain_drop, start)
            if outcome is not None:
                return outcome
            progress("[deletion] the champion changed meanwhile: redoing on the new champion")
        raise InfraError("the champion kept changing during the deletion; try again later")
    except BadInput as err:
        request = record(ctx, request, "rejected", str(err), error=str(err))
        return finish(ctx, request)
    except InfraError as err:
        try:  # one try, no task retries: S3 itself may be the failing service; it then stays 'running'
            ctx.ledger.update(request, "failed", str(err), error=str(err))  # retryable by `lau process`
        except Exception:  # noqa: BLE001 - either way the request is retryable
            pass
        raise


def attempt(ctx: Context, request: Request, max_retain_drop: float | None,
            start: float) -> dict[str, Any] | None:
    """One try on the current champion; None when the champion moved before registration."""
    champion, parent = load_champion(ctx)
    verify_champion(ctx.registry, ctx.storage, champion)  # tamper evidence: a gated lineage, else exit 3
    depth = ctx.params.unlearn.depth
    cached = cached_features(ctx, parent, depth, champion.tag("data_version"),
                             pinned=(champion.tag("feature_cache_key"), champion.tag("feature_cache_sha256")))
    fault_point("features")
    unlearned = unlearn(ctx.params, parent, cached.features, tuple(request.classes), champion.forgotten,
                        champion.excluded)
    fault_point("unlearn")
    evaluation = evaluate(parent, unlearned.candidate, cached.features, unlearned.forgotten)
    gate_cfg = ctx.params.gate
    if max_retain_drop is not None:
        gate_cfg = dataclasses.replace(gate_cfg, max_retain_drop=float(max_retain_drop))
    verdict: Verdict = gate(evaluation["metrics"], gate_cfg)
    timings = {"features_s": round(cached.seconds, 4), "features_source": cached.source,
               "unlearn_s": round(unlearned.result.seconds, 4), "unlearn_steps": unlearned.result.steps,
               "evaluate_s": evaluation["evaluate_s"]}
    evaluation = {**evaluation, "gate": verdict.to_json(), "timings": timings,
                  "forgotten": list(unlearned.forgotten), "parent_version": champion.version,
                  "class_names": list(parent.spec.class_names), "feature_cache_key": cached.features.key,
                  "feature_cache_sha256": cached.sha256}
    plots_dir = plots(evaluation, list(parent.spec.class_names), list(unlearned.forgotten),
                      ctx.settings.work_dir / "plots" / request.request_id)
    if not verdict.passed:
        timings["total_s"] = round(time.perf_counter() - start, 3)
        fields = _fields(evaluation, champion.version, None)
        report_uri = audit_report(ctx, _report(ctx, request, "rejected", evaluation, None), plots_dir)
        request = record(ctx, request, "rejected", f"gate failed: {verdict.reason()}", report_uri=report_uri,
                         error=f"gate failed: {verdict.reason()}", **fields)
        return finish(ctx, request)
    current = read_champion(ctx)
    if current is None or current.version != champion.version:
        return None
    tags = {"parent_version": champion.version, "forgotten_classes": list(unlearned.forgotten),
            "request_ids": request.request_id, "method": ctx.params.unlearn.method, "depth": depth,
            "num_classes": parent.spec.num_classes, "dataset": champion.tag("dataset"),
            "arch": champion.tag("arch"),
            "data_version": champion.tag("data_version"), "data_uri": champion.tag("data_uri"),
            "excluded_classes": list(champion.excluded), "feature_cache_key": cached.features.key,
            "feature_cache_sha256": cached.sha256,
            "gate": "passed", "code_commit": code_commit(),
            "test_retain_acc": evaluation["metrics"]["test_retain_acc"]}
    version = register(ctx, unlearned.candidate, run_name=f"forget {list(request.classes)} ({request.request_id})",
                       tags=tags, metrics={**evaluation["metrics"], **_numeric(timings)},
                       evaluation=json_safe(evaluation), plots_dir=plots_dir, depth=depth,
                       data={"name": champion.tag("dataset", "dataset"), "version": champion.tag("data_version"),
                             "uri": champion.tag("data_uri")})
    return complete(ctx, request, version, evaluation, plots_dir, start)


def complete(ctx: Context, request: Request, version: Version, evaluation: dict,
             plots_dir: Path | None, start: float) -> dict[str, Any] | None:
    """After registration: promote (only over its own parent), exclude the classes from the training
    data, publish the report, record. Idempotent, so a run
    that crashed anywhere here is completed by the next one. None when the version is superseded."""
    fault_point("registered")
    current = read_champion(ctx)
    parent = version.tag("parent_version")
    if current is not None and current.version not in (parent, version.version):
        tag(ctx, version, "superseded_by", current.version)  # never promoted over a newer champion
        return None
    if current is None or current.version != version.version:
        promote(ctx, version)
    exclude_classes(ctx.settings.params_path, version.forgotten)
    evaluation.setdefault("timings", {})["total_s"] = round(time.perf_counter() - start, 3)
    report_uri = audit_report(ctx, _report(ctx, request, "registered", evaluation, version), plots_dir)
    tag(ctx, version, "report_uri", report_uri)
    fault_point("promoted")
    request = record(ctx, request, "registered", f"version {version.version} is {ctx.params.registry.alias}",
                     report_uri=report_uri, error=None, **_fields(evaluation, parent, version.version))
    return finish(ctx, request)


def finish(ctx: Context, request: Request) -> dict[str, Any]:
    summary = json_safe(request.summary())
    try:
        dashboard(ctx, summary)
    except Exception as err:  # noqa: BLE001 - the dashboard never decides a deletion's outcome
        progress(f"[deletion] dashboard not updated: {err}")
    return summary


def _fields(evaluation: dict, parent_version: str | None, version: str | None) -> dict[str, Any]:
    return {"parent_version": parent_version, "version": version,
            "forgotten_classes": evaluation.get("forgotten", []), "gate": evaluation.get("gate"),
            "metrics": json_safe(evaluation["metrics"]), "timings": evaluation.get("timings")}


def _numeric(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}


def _report(ctx: Context, request: Request, status: str, evaluation: dict, version: Version | None) -> dict:
    """What the audit report says: request, models, gate, evidence, hashes and timeline."""
    return json_safe({
        "request_id": request.request_id, "status": status,
        "request": {"classes": request.classes, "reason": request.reason or "-",
                    "submitted_at": request.submitted_at, "attempts": request.attempts},
        "model": {"name": ctx.model_name, "parent_version": evaluation.get("parent_version"),
                  "new_version": version.version if version else "none (nothing registered)",
                  "forgotten_classes (cumulative)": evaluation.get("forgotten"),
                  "class_names": ", ".join(evaluation.get("class_names", []))},
        "gate": evaluation["gate"], "metrics": evaluation["metrics"],
        "timings": evaluation.get("timings", {}),
        "hashes": {"weights_sha256": version.tag("weights_sha256") if version else "-",
                   "data_version (dvc md5)": version.tag("data_version") if version else "-",
                   "feature_cache_key": evaluation.get("feature_cache_key", "-"),
                   "feature_cache_sha256": evaluation.get("feature_cache_sha256", "-"),
                   "code_commit": code_commit()},
        "timeline": {**{entry["at"]: f"{entry['status']}: {entry['note']}" for entry in request.history},
                     now(): f"{status}: version {version.version if version else '-'}"},
        "note": PROBE_NOTE})
