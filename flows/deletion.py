"""The deletion flow: load the champion, read cached features, LAU, evaluate, gate, and only then
register, promote and record the erasure; or reject with the failed checks and change nothing.

`deletion` runs one request now; `process_pending` runs every retryable request of a model (the
scheduled deployment). Both hold the model's lock, so one deletion runs at a time per model, and a
request already final is returned as it is: each request is processed exactly once. A request that
fails for any reason other than its own input is recorded `failed` (retryable) and the pass goes
on to the next one: no request blocks another.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, runtime
from prefect.futures import PrefectFuture

from flows.lineage import check_champion, lineage_metrics, root_accuracy
from flows.lock import model_lock
from lau.config import GateConfig
from lau.errors import BadInput
from lau.pipeline import Unlearned
from lau.utils import progress
from tasks.context import Context
from tasks.deletion_engine import run_engine
from tasks.engine import gate
from tasks.evidence import Evidence
from tasks.features import CachedFeatures
from tasks.ledger import RejectedBy, Request, RequestStatus
from tasks.policy import fault_point
from tasks.registry import Version, code_commit
from tasks.reports import audit_report, deletion_report, plots, prefect_artifacts
from tasks.requests import append_erasures, read_request, record, retryable_requests
from tasks.settings import InfraError
from tasks.tags import VersionTags
from tasks.versions import (
    DataInput,
    end_abandoned_runs,
    find_version,
    finish_version,
    load_champion,
    log_plots,
    promote_over_parent,
    read_evidence,
    register,
    tag,
)

REDO_LIMIT = 3


@flow(name="deletion", flow_run_name="forget {request_id}")
def deletion(request_id: str, model_name: str | None = None, max_retain_drop: float | None = None,
             params_path: str | None = None) -> dict[str, Any]:
    """Process one deletion request now, under the model's lock. ``max_retain_drop`` overrides the
    gate's threshold for this request (stored with it, so a retry uses it too)."""
    ctx = Context.load(model_name, params_path)
    with model_lock(ctx.model_name):
        return handle_request(ctx, request_id, max_retain_drop).summary()


@flow(name="process pending deletions", flow_run_name="process {model_name}")
def process_pending(model_name: str | None = None, params_path: str | None = None) -> list[dict[str, Any]]:
    """One pass over every pending (or interrupted, or failed) request of a model, oldest first."""
    ctx = Context.load(model_name, params_path)
    with model_lock(ctx.model_name):
        # Listed under the lock, where only this pass changes them: each record is not read again.
        return [handle_request(ctx, request.request_id, known=request).summary()
                for request in retryable_requests(ctx)]


def handle_request(ctx: Context, request_id: str, max_retain_drop: float | None = None, *,
                   known: Request | None = None) -> Request:
    """Take a request to a final status, or to `failed` (retryable) when something other than the
    request itself failed. Raises only when the ledger itself cannot record that. ``known``: the
    request's record as read under this lock (not read again)."""
    start = time.perf_counter()
    request = known if known is not None else read_request(ctx, request_id)
    if request.status.final:
        progress(f"[deletion] {request_id} is already {request.status}; nothing to do")
        return request
    fields: dict[str, Any] = {"attempts": request.attempts + 1, "error": None,
                              "flow_run_id": str(runtime.flow_run.id or "") or None}
    if max_retain_drop is not None and request.max_retain_drop is None:
        fields["max_retain_drop"] = float(max_retain_drop)
    request = record(ctx, request, RequestStatus.RUNNING, f"attempt {request.attempts + 1}", **fields)
    try:
        return run_request(ctx, request, start)
    except BadInput as err:
        return record(ctx, request, RequestStatus.REJECTED, str(err), error=str(err),
                      rejected_by=RejectedBy.INPUT)
    except Exception as err:  # noqa: BLE001 - any other failure is recorded, retryable, never blocking
        return _record_failure(ctx, request, err)


def run_request(ctx: Context, request: Request, start: float) -> Request:
    """Finish what a crashed attempt registered, else attempt on the champion (again if it moved).
    ``request``: as recorded `running`, its ``attempts`` counting this one."""
    loading = load_champion.submit(ctx)  # read beside the lookup: almost every request needs it
    # Only an earlier attempt can have registered a version of this request, and every attempt is
    # counted in the ledger before it starts: a first attempt skips the registry search.
    existing = find_version(ctx, request.request_id) if request.attempts > 1 else None
    if request.attempts > 1 and existing is None:  # a crashed attempt's run, if any, will never serve
        end_abandoned_runs(ctx, request.request_id, request.attempts)
    if existing is not None:
        loading.wait()
        loading = None
        progress(f"[deletion] {request.request_id} already produced version {existing.version}; completing")
        evidence = Evidence.from_json(read_evidence(ctx, existing))
        done = complete(ctx, request, existing, evidence, start)
        if done is not None:
            return done
    for _ in range(REDO_LIMIT):
        done = attempt(ctx, request, start, loading)
        loading = None
        if done is not None:
            return done
        progress("[deletion] the champion changed meanwhile: redoing on the new champion")
    raise InfraError("the champion kept changing during the deletion; try again later")


@dataclasses.dataclass(frozen=True)
class Judged:
    """One attempt's candidate, the champion it was made from, and the gate's evidence about it."""

    champion: Version
    unlearned: Unlearned
    cached: CachedFeatures
    evidence: Evidence


def attempt(ctx: Context, request: Request, start: float, loading: PrefectFuture | None = None) -> Request | None:
    """One try on the current champion (``loading``: load_champion, already submitted); None when
    the champion moved before promotion."""
    judged = judge(ctx, request, loading)
    evidence = judged.evidence
    if not evidence.verdict.passed:
        return reject(ctx, request, evidence, draw_plots(ctx, request, evidence), start)
    # No second look at the champion here: complete() reads it again once the version exists, and
    # promotes only over the parent (under the model's lock, only a hand promotion can move it).
    clock = time.perf_counter()
    champion = judged.champion
    data = DataInput(champion.tag("dataset", "dataset"), champion.tag("data_version"), champion.tag("data_uri"), {})
    version = register(ctx, judged.unlearned.candidate, version_tags(ctx, request, judged),
                       run_name=f"forget {request.classes} ({request.request_id})",
                       metrics={**evidence.metrics, **_numbers(evidence.timings)}, evidence=evidence.to_json(),
                       plots_dir=None, data=data, defer_audit=True)
    evidence = dataclasses.replace(evidence, timings={**evidence.timings,
                                                      "register_s": round(time.perf_counter() - clock, 4)})
    return complete(ctx, request, version, evidence, start)


def judge(ctx: Context, request: Request, loading: PrefectFuture | None = None) -> Judged:
    """Load the champion and its features, unlearn, evaluate, gate: everything the verdict needs.
    The champion's lineage check and its root's accuracy are read beside the engine's work (Prefect's
    thread pool); the verdict waits for both, so nothing is registered on an unchecked champion, and
    a champion the pipeline did not make is the error reported, whatever else failed."""
    clock = time.perf_counter()
    champion, parent = loading.result() if loading is not None else load_champion(ctx)
    lineage = check_champion.submit(ctx, champion)
    erased = set(request.classes) | set(champion.forgotten) | set(champion.excluded)
    root = root_accuracy.submit(ctx, champion, tuple(c for c in range(parent.spec.num_classes) if c not in erased))
    loaded = time.perf_counter()
    try:
        cached, unlearned, evaluation = run_engine(ctx, request, champion, parent)
    except BaseException:
        root.wait()
        lineage.result()  # raises the champion's own problem, if it has one
        raise
    lineage.result()
    metrics = {**evaluation.metrics, **lineage_metrics(root.result(), evaluation.metrics["test_retain_acc"])}
    verdict = gate(metrics, gate_config(ctx, request))
    evidence = Evidence(
        evaluation, verdict, metrics, tuple(sorted(set(unlearned.forgotten) | set(champion.forgotten))),
        champion.version, tuple(parent.spec.class_names), cached.features.key, cached.sha256,
        {"load_s": round(loaded - clock, 4), "features_s": round(cached.seconds, 4), "features_source": cached.source,
         "unlearn_s": round(unlearned.result.seconds, 4), "unlearn_steps": unlearned.result.steps,
         "evaluate_s": round(evaluation.seconds, 4), "engine_gate_s": round(time.perf_counter() - loaded, 4)},
        {"method": ctx.params.unlearn.method, "depth": ctx.params.unlearn.depth, **unlearned.result.to_json()})
    return Judged(champion, unlearned, cached, evidence)


def version_tags(ctx: Context, request: Request, judged: Judged) -> VersionTags:
    """The tags of the version a passing candidate becomes (every one set at registration)."""
    champion, evidence, cached = judged.champion, judged.evidence, judged.cached
    return VersionTags(
        method=ctx.params.unlearn.method, verdict=evidence.verdict, dataset=champion.tag("dataset"),
        arch=champion.tag("arch"), num_classes=judged.unlearned.candidate.spec.num_classes, depth=ctx.params.unlearn.depth,
        data_version=champion.tag("data_version"), data_uri=champion.tag("data_uri"),
        feature_cache_key=cached.features.key, feature_cache_sha256=cached.sha256,
        test_retain_acc=evidence.metrics["test_retain_acc"], code_commit=code_commit(),
        forgotten_classes=evidence.forgotten, excluded_classes=champion.excluded,
        parent_version=champion.version, root_version=champion.root_version,
        root_test_retain_acc=evidence.metrics.get("root_test_retain_acc"), request_ids=(request.request_id,),
        lau=evidence.lau, search=judged.unlearned.result.tags())


def complete(ctx: Context, request: Request, version: Version, evidence: Evidence, start: float) -> Request | None:
    """After registration: promote (only over its own parent), record the erasure, log the audit
    part of the version's run, draw the plots and add them to it, publish the report, record the
    request. Idempotent, so a run that crashed anywhere here is completed by the next one. None when
    the version is superseded (a newer champion appeared meanwhile). What the champion does not need
    waits until it has moved: on two busy cores, plots drawn beside the registration slowed it down
    more than they took."""
    fault_point("registered", request.request_id)
    clock = time.perf_counter()
    newer = promote_over_parent(ctx, version)
    if newer is not None:
        tag(ctx, version, "superseded_by", newer.version)  # never promoted over a newer champion
        finish_version(ctx, version)
        return None
    served = {"promote_s": round(time.perf_counter() - clock, 4), "to_champion_s": round(time.perf_counter() - start, 3),
              "champion_at": datetime.now(UTC).isoformat(timespec="milliseconds")}  # the alias answered: it moved
    fault_point("served", request.request_id)
    append_erasures(ctx, tuple(request.classes), request.request_id, version.version)
    finish_version(ctx, version)  # the audit part of its run: params.yaml, dataset, environment files
    plots_dir = draw_plots(ctx, request, evidence)
    log_plots(ctx, version, plots_dir)
    timings = {**evidence.timings, **served, "total_s": round(time.perf_counter() - start, 3)}
    evidence = dataclasses.replace(evidence, timings=timings)
    report_uri = audit_report(ctx, deletion_report(ctx, request, "registered", evidence, version), plots_dir)
    tag(ctx, version, "report_uri", report_uri)
    fault_point("promoted", request.request_id)
    request = record(ctx, request, RequestStatus.REGISTERED, f"version {version.version} is "
                     f"{ctx.params.registry.alias}", report_uri=report_uri, **evidence.ledger_fields(version.version))
    return publish_verdict(ctx, request)


def reject(ctx: Context, request: Request, evidence: Evidence, plots_dir: Path, start: float) -> Request:
    """The gate said no: nothing registered; the request is final with the failed checks."""
    evidence = dataclasses.replace(evidence, timings={**evidence.timings,
                                                      "total_s": round(time.perf_counter() - start, 3)})
    report_uri = audit_report(ctx, deletion_report(ctx, request, "rejected", evidence, None), plots_dir)
    reason = f"gate failed: {evidence.verdict.reason()}"
    request = record(ctx, request, RequestStatus.REJECTED, reason, report_uri=report_uri, error=reason,
                     rejected_by=RejectedBy.GATE, **evidence.ledger_fields(None))
    return publish_verdict(ctx, request)


def draw_plots(ctx: Context, request: Request, evidence: Evidence) -> Path:
    """The before/after plots of a request's evaluation, under the work dir."""
    return plots(evidence.evaluation, list(evidence.class_names), list(evidence.forgotten),
                 ctx.settings.work_dir / "plots" / request.request_id)


def gate_config(ctx: Context, request: Request) -> GateConfig:
    """params.yaml's gate, with the request's own threshold when it has one."""
    if request.max_retain_drop is None:
        return ctx.params.gate
    return dataclasses.replace(ctx.params.gate, max_retain_drop=float(request.max_retain_drop))


def publish_verdict(ctx: Context, request: Request) -> Request:
    """The Prefect artifacts of a finished request; they never decide its outcome."""
    try:
        prefect_artifacts(ctx, request.summary())
    except Exception as err:  # noqa: BLE001
        progress(f"[deletion] Prefect artifacts not updated: {err}")
    return request


def _record_failure(ctx: Context, request: Request, err: Exception) -> Request:
    """`failed` with the error, retryable by the next pass. If even the ledger cannot take that
    (S3 down), the request stays `running` (retryable too) and the error goes up."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(err, InfraError):
        message = f"unexpected error ({type(err).__name__}): {message}"
    progress(f"[deletion] {request.request_id} failed: {message}")
    try:  # one try, no task retries: S3 itself may be the failing service
        return ctx.ledger.update(request, RequestStatus.FAILED, message, error=message)
    except Exception:  # noqa: BLE001
        raise InfraError(message) from None


def _numbers(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
