"""Plots and the audit report (markdown and HTML twins). Pure rendering: no I/O beyond files."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PROBE_NOTE = ("probe_forget_acc is how well a new linear probe, trained on the features the classifier "
              "reads, still recognises the forgotten classes. Depth-1 LAU changes only the classification "
              "layer, so those features are the parent's and the probe still finds the class, although "
              "the served model no longer predicts it. A model retrained without the class scores about "
              "as high: read this value against a retrain (the consolidation report), never against 0.")


def plot_confusion(before: list[list[int]], after: list[list[int]], class_names: list[str],
                   path: str | Path, title: str = "Test confusion matrix") -> Path:
    """Side-by-side confusion matrices (rows: true class, columns: predicted)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, matrix, name in zip(axes, (before, after), ("before", "after")):
        image = ax.imshow(matrix, cmap="Blues")
        ax.set_title(f"{title}: {name}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, class_names, fontsize=7)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                if count:
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                            color="white" if count > max(map(max, matrix)) / 2 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_per_class(before: list[float | None], after: list[float | None], class_names: list[str],
                   forget_classes: list[int], path: str | Path, title: str = "Per-class test accuracy") -> Path:
    """Grouped bars of per-class accuracy before/after; forgotten classes in red."""
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(class_names)), 4))
    xs = range(len(class_names))
    ax.bar([x - 0.2 for x in xs], [v or 0 for v in before], 0.4, label="before", color="#9db4d6")
    colors = ["#d62728" if i in forget_classes else "#1f4e8c" for i in xs]
    ax.bar([x + 0.2 for x in xs], [v or 0 for v in after], 0.4, label="after", color=colors)
    ax.set_xticks(list(xs), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{title} (forgotten: {', '.join(class_names[c] for c in forget_classes)})")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_bench(rows: list[dict], path: str | Path, title: str = "Unlearning methods") -> Path:
    """Accuracy vs unlearning time (log scale): test-retain and test-forget per method."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in zip(axes, ("test_retain_acc", "test_forget_acc"),
                              ("test-retain accuracy (%) - higher is better",
                               "test-forget accuracy (%) - 0 is the goal")):
        for row in rows:
            seconds = max(row["unlearn_s"], 1e-4)
            ax.scatter(seconds, row[key], s=60)
            ax.annotate(row["method"], (seconds, row[key]), textcoords="offset points", xytext=(5, 5),
                        fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("unlearning time (s, log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def bench_table(rows: list[dict]) -> str:
    """Markdown table of benchmark rows."""
    keys = ["unlearn_s", "forget_acc", "test_forget_acc", "retain_acc", "test_retain_acc",
            "mia_efficacy", "probe_forget_acc"]
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row in rows:
        cells = [_fmt(row.get(k), 4 if k == "unlearn_s" else 2) for k in keys]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(report: dict[str, Any]) -> str:
    """The audit report as markdown: request, verdict, gate checks, evidence, hashes, timeline."""
    title = report.get("title", f"request {report['request_id']}")
    lines = [f"# Unlearning audit report: {title}", "", f"**Verdict: {report['status'].upper()}**", ""]
    if report.get("dashboard"):
        lines += [f"Dashboard: {report['dashboard']}", ""]
    lines += ["## Request", *(_kv(report["request"])), "", "## Model", *(_kv(report["model"])), ""]
    if report.get("residual"):
        lines += ["## Probe residual of the erased classes", *(_kv(report["residual"])), ""]
    lines += ["## Gate checks", "", "| check | value | threshold | passed |", "|---|---|---|---|"]
    for check in report["gate"]["checks"]:
        lines.append(f"| {check['name']} | {_fmt(check['value'])} | {check.get('op', '')} "
                     f"{_fmt(check['threshold'])} | {'yes' if check['passed'] else 'NO'} |")
    lines += ["", "## Evidence", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in report["metrics"].items()]
    lines += ["", f"> {PROBE_NOTE}", "", "## Timings (s)", *(_kv(report.get("timings", {}))), "",
              "## Hashes", *(_kv(report.get("hashes", {}))), "", "## Timeline", *(_kv(report.get("timeline", {})))]
    if report.get("plots"):
        lines += ["", "## Plots", *(f"![{name}]({name})" for name in report["plots"])]
    return "\n".join(lines) + "\n"


def render_html(report: dict[str, Any]) -> str:
    """The same report as a self-contained HTML page (plots referenced beside it)."""
    esc = html.escape
    status = report["status"]
    color = {"registered": "#1a7f37", "rejected": "#cf222e"}.get(status, "#9a6700")
    rows = "".join(
        f"<tr><td>{esc(c['name'])}</td><td>{esc(_fmt(c['value']))}</td>"
        f"<td>{esc(str(c.get('op', '')))} {esc(_fmt(c['threshold']))}</td>"
        f"<td style='color:{'#1a7f37' if c['passed'] else '#cf222e'}'>{'yes' if c['passed'] else 'NO'}</td></tr>"
        for c in report["gate"]["checks"])
    metrics = "".join(f"<tr><td>{esc(k)}</td><td>{esc(_fmt(v))}</td></tr>" for k, v in report["metrics"].items())

    def table(data: dict) -> str:
        return "<table>" + "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                                   for k, v in data.items()) + "</table>"

    plots = "".join(f"<figure><img src='{esc(p)}' style='max-width:100%'><figcaption>{esc(p)}</figcaption></figure>"
                    for p in report.get("plots", []))
    title = report.get("title", f"request {report['request_id']}")
    dashboard = (f"<p><a href='{esc(report['dashboard'])}'>Open in the ops dashboard</a></p>"
                 if report.get("dashboard") else "")
    residual = (f"<h2>Probe residual of the erased classes</h2>{table(report['residual'])}"
                if report.get("residual") else "")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Unlearning audit report {esc(report['request_id'])}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>
<h1>Unlearning audit report</h1><p>{esc(title)}</p>{dashboard}
<h2 style="color:{color}">Verdict: {esc(status.upper())}</h2>
<h2>Request</h2>{table(report['request'])}<h2>Model</h2>{table(report['model'])}{residual}
<h2>Gate checks</h2><table><tr><th>check</th><th>value</th><th>threshold</th><th>passed</th></tr>{rows}</table>
<h2>Evidence</h2><table>{metrics}</table><p><em>{esc(PROBE_NOTE)}</em></p>
<h2>Timings (s)</h2>{table(report.get('timings', {}))}<h2>Hashes</h2>{table(report.get('hashes', {}))}
<h2>Timeline</h2>{table(report.get('timeline', {}))}<h2>Plots</h2>{plots}</body></html>
"""


def _kv(data: dict) -> list[str]:
    return [f"- **{k}**: {v}" for k, v in data.items()]


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
