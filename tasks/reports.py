"""Plots, the audit report on S3 and the Prefect dashboard artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lau.report import plot_confusion, plot_per_class, render_html, render_markdown
from tasks.common import IO, MATH, Context

PLOTS = ("confusion_test.png", "per_class_test.png", "per_class_train.png")


@task(name="plots before/after", **MATH)
def plots(evaluation: dict, class_names: list[str], forgotten: list[int], folder: Path) -> Path:
    """Confusion matrices and per-class accuracy, before (parent) and after (candidate)."""
    before, after = evaluation["before"], evaluation["after"]
    plot_confusion(before["confusion_test"], after["confusion_test"], class_names, folder / PLOTS[0])
    plot_per_class(before["per_class_test_acc"], after["per_class_test_acc"], class_names, forgotten,
                   folder / PLOTS[1], "Per-class test accuracy")
    plot_per_class(before["per_class_train_acc"], after["per_class_train_acc"], class_names, forgotten,
                   folder / PLOTS[2], "Per-class train accuracy")
    return folder


@task(name="audit report", **IO)
def audit_report(ctx: Context, report: dict[str, Any], plots_dir: Path | None) -> str:
    """Markdown and HTML twins plus the plots under ``reports/<request id>/``; returns the HTML URI."""
    prefix = f"reports/{ctx.model_name}/{report['request_id']}/"
    names = [p for p in PLOTS if plots_dir and (plots_dir / p).is_file()]
    report = {**report, "plots": names}
    for name in names:
        ctx.storage.put_file(prefix + name, plots_dir / name, "image/png")
    ctx.storage.put_bytes(prefix + "report.md", render_markdown(report).encode(), "text/markdown")
    return ctx.storage.put_bytes(prefix + "report.html", render_html(report).encode(), "text/html")


def read_report(ctx: Context, report_uri: str, fmt: str = "md") -> str | None:
    """The markdown (or HTML) text of a report, given its URI."""
    key = report_uri.split(f"s3://{ctx.settings.bucket}/", 1)[-1]
    if fmt == "md":
        key = key.rsplit("/", 1)[0] + "/report.md"
    data = ctx.storage.get_bytes(key)
    return None if data is None else data.decode()


@task(name="dashboard", cache_policy=None, retries=2, retry_delay_seconds=2)
def dashboard(ctx: Context, summary: dict[str, Any]) -> None:
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
    rows = [{"request": r.request_id, "classes": str(r.classes), "status": r.status,
             "version": r.version or "", "submitted": r.submitted_at, "updated": r.updated_at}
            for r in ctx.ledger.list(ctx.model_name)]
    create_table_artifact(rows, key=_key("ledger", ctx.model_name), description=f"ledger of {ctx.model_name}")


def _key(kind: str, model: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"{kind}-" + "".join(c if c.isalnum() else "-" for c in model.lower())
