"""Plots, the audit report on S3 and the Prefect artifacts of a finished request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lau.evaluation import Evaluation
from lau.report import plot_confusion, plot_per_class, render_html, render_markdown
from lau.utils import json_safe
from tasks.context import Context
from tasks.evidence import Evidence
from tasks.ledger import Request, now
from tasks.policy import IO, MATH
from tasks.registry import Version, code_commit

PLOTS = ("confusion_test.png", "per_class_test.png", "per_class_train.png")


@task(name="plots before/after", **MATH)
def plots(evaluation: Evaluation, class_names: list[str], forgotten: list[int], folder: Path) -> Path:
    """Confusion matrices and per-class accuracy, before (parent) and after (candidate)."""
    before, after = evaluation.before, evaluation.after
    plot_confusion(before.confusion_test, after.confusion_test, class_names, folder / PLOTS[0])
    plot_per_class(before.per_class_test_acc, after.per_class_test_acc, class_names, forgotten,
                   folder / PLOTS[1], "Per-class test accuracy")
    plot_per_class(before.per_class_train_acc, after.per_class_train_acc, class_names, forgotten,
                   folder / PLOTS[2], "Per-class train accuracy")
    return folder


@task(name="audit report", **IO)
def audit_report(ctx: Context, report: dict[str, Any], plots_dir: Path | None) -> str:
    """Markdown and HTML twins plus the plots under ``reports/<model>/<id>/``; returns the HTML URI."""
    prefix = f"reports/{ctx.model_name}/{report['request_id']}/"
    names = [p for p in PLOTS if plots_dir and (plots_dir / p).is_file()]
    report = {**report, "plots": names}
    for name in names:
        ctx.storage.put_file(prefix + name, plots_dir / name, "image/png")
    ctx.storage.put_bytes(prefix + "report.md", render_markdown(report).encode(), "text/markdown")
    return ctx.storage.put_bytes(prefix + "report.html", render_html(report).encode(), "text/html")


def dashboard_link(ctx: Context, report_id: str) -> str:
    """Where the ops dashboard shows this report (LAU_DASHBOARD_URL, default the local stack's)."""
    base = os.environ.get("LAU_DASHBOARD_URL") or f"http://127.0.0.1:{os.environ.get('LAU_DASHBOARD_PORT', '8050')}"
    return f"{base.rstrip('/')}/models/{ctx.model_name}#req-{report_id}"


def deletion_report(ctx: Context, request: Request, status: str, evidence: Evidence,
                    version: Version | None) -> dict[str, Any]:
    """What a deletion's audit report says: request, models, gate, evidence, hashes and timeline."""
    return json_safe({
        "request_id": request.request_id, "status": status, "title": f"request {request.request_id}",
        "request": {"classes": request.classes, "reason": request.reason or "-",
                    "submitted_at": request.submitted_at, "attempts": request.attempts,
                    "max_retain_drop": "params.yaml" if request.max_retain_drop is None else request.max_retain_drop},
        "model": {"name": ctx.model_name, "parent_version": evidence.parent_version,
                  "new_version": version.version if version else "none (nothing registered)",
                  "forgotten_classes (cumulative)": list(evidence.forgotten),
                  "class_names": ", ".join(evidence.class_names),
                  "LAU settings": {k: v for k, v in evidence.lau.items() if k != "candidates"} or "-",
                  "LAU candidates tried (validation retain drop)": _candidates(evidence.lau)},
        "gate": evidence.verdict.to_json(), "metrics": evidence.metrics, "timings": evidence.timings,
        "hashes": {"weights_sha256": version.tag("weights_sha256") if version else "-",
                   "data_version (dvc md5)": version.tag("data_version") if version else "-",
                   "feature_cache_key": evidence.feature_cache_key,
                   "feature_cache_sha256": evidence.feature_cache_sha256, "code_commit": code_commit()},
        "timeline": {**{entry["at"]: f"{entry['status']}: {entry['note']}" for entry in request.history},
                     now(): f"{status}: version {version.version if version else '-'}"},
        "dashboard": dashboard_link(ctx, request.request_id)})


def root_report(ctx: Context, version: Version, replaced: Version, evidence: Evidence,
                before: dict[str, Any]) -> dict[str, Any]:
    """A consolidation's audit report: the new lineage root, its gate, and the erased classes'
    linear-probe residual before (the LAU champion it replaces) and after (the retrain)."""
    report_id = f"consolidation-v{version.version}"
    residual = {"erased classes": list(evidence.forgotten),
                f"probe_forget_acc before (version {replaced.version}, LAU)": before.get("probe_forget_acc", "n/a"),
                f"probe_forget_acc after (version {version.version}, retrain)":
                    evidence.metrics.get("probe_forget_acc", "n/a")}
    return json_safe({
        "request_id": report_id, "status": "registered", "title": f"consolidation into version {version.version}",
        "request": {"kind": "consolidation (retrain on the cleaned data)", "replaces": replaced.version},
        "model": {"name": ctx.model_name, "new_version": version.version, "new lineage root": "yes",
                  "class_names": ", ".join(evidence.class_names)},
        "residual": residual, "gate": evidence.verdict.to_json(), "metrics": evidence.metrics,
        "timings": evidence.timings,
        "hashes": {"weights_sha256": version.tag("weights_sha256"), "data_version (dvc md5)": version.tag("data_version"),
                   "feature_cache_key": evidence.feature_cache_key, "code_commit": code_commit()},
        "timeline": {now(): f"registered: version {version.version} replaces {replaced.version}"},
        "dashboard": dashboard_link(ctx, report_id)})


def read_report(ctx: Context, report_uri: str, fmt: str = "md") -> str | None:
    """The markdown (or HTML) text of a report, given its URI."""
    key = report_uri.split(f"s3://{ctx.settings.bucket}/", 1)[-1]
    if fmt == "md":
        key = key.rsplit("/", 1)[0] + "/report.md"
    data = ctx.storage.get_bytes(key)
    return None if data is None else data.decode()


@task(name="prefect artifacts", cache_policy=None, retries=2, retry_delay_seconds=2)
def prefect_artifacts(ctx: Context, summary: dict[str, Any]) -> None:
    """Prefect artifacts: the verdict with its evidence, and the ledger of this model as a table."""
    metrics = summary.get("metrics") or {}
    checks = (summary.get("gate") or {}).get("checks", [])
    lines = [f"## {summary['status'].upper()}: request `{summary['request_id']}`",
             f"model **{ctx.model_name}**, parent version {summary.get('parent_version')}, "
             f"new version {summary.get('version') or '-'}; forgotten {summary.get('forgotten_classes')}",
             "", "| check | value | threshold | passed |", "|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['value']} | {c['op']} {c['threshold']} | {c['passed']} |" for c in checks]
    lines += ["", "| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in metrics.items())]
    if summary.get("report_uri"):
        lines += ["", f"Audit report: `{summary['report_uri']}`"]
    if summary.get("error"):
        lines += ["", f"Reason: {summary['error']}"]
    create_markdown_artifact("\n".join(lines), key=_key("deletion", ctx.model_name),
                             description=f"last deletion of {ctx.model_name}")
    rows = [{"request": r.request_id, "classes": str(r.classes), "status": str(r.status),
             "version": r.version or "", "submitted": r.submitted_at, "updated": r.updated_at}
            for r in ctx.ledger.list(ctx.model_name)]
    create_table_artifact(rows, key=_key("ledger", ctx.model_name), description=f"ledger of {ctx.model_name}")


def _key(kind: str, model: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"{kind}-" + "".join(c if c.isalnum() else "-" for c in model.lower())


def _candidates(lau: dict) -> str:
    """'rows: forgot, drop -0.11; full: ...' (the gate-aware search's choice is the one kept)."""
    tried = lau.get("candidates") or []
    return "; ".join(f"{c.get('name')}: {'forgot' if c.get('converged') else 'did not forget'}, "
                     f"drop {c.get('val_retain_drop')}" for c in tried) or "-"
