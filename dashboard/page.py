"""The dashboard page of one model: plain HTML with inline CSS and SVG, no script."""

from __future__ import annotations

import statistics
from html import escape
from urllib.parse import quote

from dashboard import charts
from dashboard.records import RequestRow, VersionRow, rejections_by_reason
from dashboard.settings import Settings, Slo
from dashboard.snapshot import ModelView

OPEN_ROWS, RECENT_ROWS = 200, 50  # longest tables drawn; the counts above them stay exact
STYLE = """
body{font-family:'DejaVu Sans',Arial,sans-serif;margin:0 24px 24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:17px;margin:22px 0 8px}
nav a{margin-right:12px}.meta{color:#666;font-size:13px}
table{border-collapse:collapse;background:#fff;font-size:13px;width:100%}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f0f0f0}
.tiles{display:flex;flex-wrap:wrap;gap:10px}.tile{background:#fff;border:1px solid #ddd;padding:8px 14px;min-width:120px}
.tile b{display:block;font-size:22px}.tile span{font-size:12px;color:#666}
.slo-ok{background:#e3f4e4;color:#1b5e20}.slo-warn{background:#fff0cc;color:#7a4d00}
.slo-late{background:#fbe0e0;color:#b71c1c;font-weight:bold}
.status-registered{color:#1b5e20}.status-rejected,.status-failed{color:#b71c1c}
.missing,.tamper{background:#fbe0e0;border:1px solid #c62828;color:#b71c1c;padding:8px 12px;margin:8px 0}
tr.tamper td{background:#fbe0e0;color:#b71c1c;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px}
figcaption{font-size:13px;color:#444;margin-bottom:4px}
"""


def render(view: ModelView, settings: Settings, models: list[str]) -> str:
    """The whole page for ``view.model``."""
    slo = settings.slo
    nav = " ".join(f'<a href="/models/{quote(m)}">{escape(m)}</a>' for m in models)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta http-equiv='refresh' content='60'><title>Erasures: {escape(view.model)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Erasure requests of <span id='model'>{escape(view.model)}</span></h1>",
             f"<nav>{nav} <a href='/metrics'>/metrics</a></nav>",
             f"<p class='meta'>As of {view.at:%Y-%m-%d %H:%M:%S} UTC. Deadline "
             f"{charts.duration(slo.deadline_s)} (slo.erasure_deadline_days); amber from "
             f"{slo.warning_fraction:.0%} of it. The page reloads every minute.</p>"]
    parts += [f"<div class='missing' role='alert'>{escape(line)}</div>" for line in view.missing]
    if view.tamper and view.champion is not None:
        parts.append(f"<div class='tamper' role='alert' id='tamper'>Champion version "
                     f"{escape(view.champion.version)} fails the tamper check: {escape(view.tamper)}</div>")
    parts += [_tiles(view, slo), _open(view, slo), _recent(view, settings), _lineage(view, settings),
              _charts(view, slo), "</body></html>"]
    return "".join(parts)


def _tiles(view: ModelView, slo: Slo) -> str:
    if view.requests is None:
        tiles = [("?", "requests (ledger unreadable)", "")]
    else:
        counts, oldest = view.counts, view.oldest_open_age_s()
        durations = [d for r in view.requests if (d := r.erasure_s) is not None]
        tiles = [(str(len(view.open_requests)), "open requests", ""),
                 (charts.duration(oldest) if view.open_requests else "-", "oldest open",
                  f"slo-{slo.state(oldest)}" if view.open_requests else ""),
                 (str(counts["registered"]), "registered", ""), (str(counts["rejected"]), "rejected", ""),
                 (str(counts["failed"]), "failed (retried)", ""),
                 (charts.duration(statistics.median(durations)) if durations else "-", "median time to erasure", "")]
    if view.champion is not None:
        tiles.append((f"v{view.champion.version}", "champion", "slo-late" if view.tamper else ""))
    if view.erased_classes is not None:
        erased = ", ".join(str(c) for c in view.erased_classes) or "none"
        tiles.append((str(len(view.erased_classes)), f"erased classes ({erased})", ""))
    return "<div class='tiles' id='summary'>" + "".join(
        f"<div class='tile {cls}'><b>{escape(value)}</b><span>{escape(label)}</span></div>"
        for value, label, cls in tiles) + "</div>"


def _open(view: ModelView, slo: Slo) -> str:
    head = "<h2>Open requests (oldest first)</h2>"
    if view.requests is None:
        return head + "<p>The ledger cannot be read.</p>"
    rows = view.open_requests
    if not rows:
        return head + "<p id='open'>No open request.</p>"
    body = []
    for r in rows[:OPEN_ROWS]:
        age = r.age_s(view.at)
        body.append(f"<tr id='req-{escape(r.request_id)}'><td>{escape(r.request_id)}</td><td>{_classes(r.classes)}</td>"
                    f"<td class='status-{escape(r.status)}'>{escape(r.status)}</td><td>{r.submitted_at:%Y-%m-%d %H:%M:%S}</td>"
                    f"<td class='age slo-{slo.state(age)}' data-age-seconds='{age:.0f}'>{charts.duration(age)} "
                    f"({age / slo.deadline_s:.0%} of the deadline)</td><td>{r.attempts}</td>"
                    f"<td>{escape(r.error or r.reason or '')}</td></tr>")
    more = f"<p>and {len(rows) - OPEN_ROWS} more.</p>" if len(rows) > OPEN_ROWS else ""
    return (head + "<table id='open'><tr><th>request</th><th>classes</th><th>status</th><th>submitted (UTC)</th>"
            "<th>age</th><th>attempts</th><th>note</th></tr>" + "".join(body) + "</table>" + more)


def _recent(view: ModelView, settings: Settings) -> str:
    head = f"<h2>Recent requests (last {RECENT_ROWS}, newest first)</h2>"
    if view.requests is None:
        return head + "<p>The ledger cannot be read.</p>"
    rows = view.finished[:RECENT_ROWS]
    if not rows:
        return head + "<p id='recent'>No finished request yet.</p>"
    body = [f"<tr id='req-{escape(r.request_id)}'><td>{escape(r.request_id)}</td>"
            f"<td class='status-{escape(r.status)}'>{escape(r.status)}</td><td>{_classes(r.classes)}</td>"
            f"<td>{r.submitted_at:%Y-%m-%d %H:%M:%S}</td><td>{charts.duration(r.erasure_s)}</td>"
            f"<td class='verdict'>{_verdict(r)}</td><td class='links'>{_links(r, view.model, settings)}</td></tr>"
            for r in rows]
    return (head + "<table id='recent'><tr><th>request</th><th>status</th><th>classes</th><th>submitted (UTC)</th>"
            "<th>time to erasure</th><th>gate verdict</th><th>links</th></tr>" + "".join(body) + "</table>")


def _verdict(r: RequestRow) -> str:
    if r.gate_passed:
        return "passed"
    if r.failed_checks:
        return "failed: " + "; ".join(escape(c.describe()) for c in r.failed_checks)
    return escape(f"refused: {r.error}" if r.error else "-")


def _links(r: RequestRow, model: str, settings: Settings) -> str:
    links = []
    prefix = f"s3://{settings.bucket}/"
    if r.report_uri and r.report_uri.startswith(prefix + "reports/"):
        links.append(("audit report", "/" + r.report_uri[len(prefix):]))
    version = r.version or r.parent_version
    if version and settings.mlflow_ui:
        label = f"MLflow v{version}" if r.version else f"MLflow v{version} (parent)"
        links.append((label, mlflow_version_url(settings, model, version)))
    if r.flow_run_id and settings.prefect_ui:
        links.append(("Prefect run", f"{settings.prefect_ui}/runs/flow-run/{quote(r.flow_run_id)}"))
    return " · ".join(f"<a href='{escape(url)}'>{escape(label)}</a>" for label, url in links) or "-"


def mlflow_version_url(settings: Settings, model: str, version: str) -> str:
    return f"{settings.mlflow_ui}/#/models/{quote(model)}/versions/{quote(version)}"


def _lineage(view: ModelView, settings: Settings) -> str:
    head = "<h2>Lineage: root to champion</h2>"
    if view.versions is None or view.lineage is None:
        return head + "<p>The registry cannot be read.</p>"
    if not view.lineage.steps:
        return head + "<p id='lineage'>No champion yet (run <code>lau train</code>).</p>"
    body = []
    for step in view.lineage.steps:
        v = step.version
        is_champion = v is view.lineage.champion
        css = " class='tamper'" if is_champion and view.tamper else ""
        acc = "-" if v.test_retain_acc is None else f"{v.test_retain_acc:.2f} %"
        drop = "-" if step.drop_vs_root is None else f"{step.drop_vs_root:+.2f} pt"
        version_link = (f"<a href='{escape(mlflow_version_url(settings, view.model, v.version))}'>v{escape(v.version)}</a>"
                        if settings.mlflow_ui else f"v{escape(v.version)}")
        body.append(f"<tr{css}><td>{version_link}{' (champion)' if is_champion else ''}</td><td>{escape(v.method)}</td>"
                    f"<td>{_classes(step.newly_erased)}</td><td>{_classes(sorted(set(v.forgotten) | set(v.excluded)))}</td>"
                    f"<td>{acc}</td><td>{drop}</td><td>{_when(v)}</td></tr>")
    notes = [f"<p class='meta'>Drop vs root: the root's test-retain accuracy minus the version's, in points "
             f"(root {view.lineage.root_acc if view.lineage.root_acc is not None else '?'} %).</p>"]
    if view.lineage.broken:
        notes.append(f"<div class='missing'>The lineage walk stopped: {escape(view.lineage.broken)}</div>")
    notes.append(_consolidation(view.consolidation))
    return (head + "<table id='lineage'><tr><th>version</th><th>method</th><th>erased here</th>"
            "<th>erased so far</th><th>test-retain accuracy</th><th>drop vs root</th><th>created (UTC)</th></tr>"
            + "".join(body) + "</table>" + "".join(notes))


def _consolidation(version: VersionRow | None) -> str:
    if version is None:
        return "<p id='consolidation'>Last consolidation: never (every version descends from the trained root).</p>"
    replaced = version.tag("consolidated_from")
    return (f"<p id='consolidation'>Last consolidation: version {escape(version.version)} on {_when(version)}"
            f"{f' (replaced version {escape(replaced)})' if replaced else ''}.</p>")


def _charts(view: ModelView, slo: Slo) -> str:
    figures = []
    if view.requests is not None:
        figures.append(("Time to erasure over time", charts.time_to_erasure(view.requests, slo)))
    if view.per_class is not None and view.champion is not None:
        erased = sorted(set(view.champion.forgotten) | set(view.champion.excluded))
        figures.append((f"Per-class accuracy of the champion (v{view.champion.version})",
                        charts.per_class_accuracy(view.per_class[0], view.per_class[1], erased, view.champion.version)))
    if view.requests is not None:
        figures.append(("Rejections by reason", charts.rejections(rejections_by_reason(view.requests))))
    return "<h2>Charts</h2><div class='charts' id='charts'>" + "".join(
        f"<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>" for caption, svg in figures) + "</div>"


def _classes(classes: tuple[int, ...] | list[int]) -> str:
    return escape(", ".join(str(c) for c in classes)) or "-"


def _when(v: VersionRow) -> str:
    return f"{v.created_at:%Y-%m-%d %H:%M}" if v.created_at else "-"
