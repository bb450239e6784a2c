"""Charts as inline SVG, drawn on the server: nothing for a browser to fetch, no JavaScript.

Each function returns one ``<svg>`` element (a string) with a <title> saying what it shows.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

from dashboard.records import RequestRow
from dashboard.settings import Slo

W, H = 560, 240  # drawing size in px
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 44  # margins: axis labels live there
COLOURS = {"ok": "#2e7d32", "warn": "#e69500", "late": "#c62828", "bar": "#1f6fb2", "erased": "#c62828",
           "grid": "#d9d9d9", "text": "#333333"}
# Log-scale ticks of the time-to-erasure axis.
DURATION_TICKS = ((1, "1 s"), (10, "10 s"), (60, "1 min"), (600, "10 min"), (3600, "1 h"), (6 * 3600, "6 h"),
                  (86400, "1 d"), (7 * 86400, "7 d"), (30 * 86400, "30 d"), (90 * 86400, "90 d"))


def _svg(name: str, title: str, body: list[str], height: float = H) -> str:
    return (f'<svg class="chart" data-chart="{name}" role="img" aria-label="{escape(title)}" '
            f'viewBox="0 0 {W} {height:.0f}" width="{W}" height="{height:.0f}" xmlns="http://www.w3.org/2000/svg">'
            f"<title>{escape(title)}</title>{''.join(body)}</svg>")


def _text(x: float, y: float, label: str, anchor: str = "middle", size: int = 11, colour: str = "text",
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{COLOURS.get(colour, colour)}" {extra}>{escape(label)}</text>')


def _empty(name: str, title: str, message: str) -> str:
    return _svg(name, title, [_text(W / 2, H / 2, message, size=13)])


def time_to_erasure(requests: Sequence[RequestRow], slo: Slo) -> str:
    """Each registered request as a dot: when it was erased (x) against how long it took (y, log),
    coloured against the SLO, with the warning and deadline lines."""
    name, title = "time-to-erasure", "Time to erasure of registered requests (submitted to registered)"
    done = sorted((r for r in requests if r.erasure_s is not None and r.finished_at), key=lambda r: r.finished_at)
    if not done:
        return _empty(name, title, "no registered request yet")
    t0, t1 = done[0].finished_at.timestamp(), done[-1].finished_at.timestamp()
    if t1 - t0 < 60:
        t0, t1 = t0 - 30, t1 + 30
    longest = max(r.erasure_s or 0.0 for r in done)
    y_lo, y_hi = 1.0, max(10.0, longest * 1.5, min(slo.deadline_s * 1.2, longest * 20))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x_of(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * plot_w

    def y_of(seconds: float) -> float:
        seconds = min(max(seconds, y_lo), y_hi)
        return TOP + plot_h - (math.log10(seconds) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo)) * plot_h

    body = _axes(plot_w, plot_h)
    for seconds, label in DURATION_TICKS:
        if y_lo <= seconds <= y_hi:
            y = y_of(seconds)
            body += [f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{COLOURS["grid"]}"/>',
                     _text(LEFT - 6, y + 4, label, "end", 10)]
    for seconds, state, label in ((slo.warning_s, "warn", "warning"), (slo.deadline_s, "late", "deadline")):
        if seconds <= y_hi:
            y = y_of(seconds)
            body += [f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{COLOURS[state]}" '
                     'stroke-dasharray="6 4"/>', _text(W - RIGHT - 2, y - 4, label, "end", 10, state)]
    if slo.deadline_s > y_hi:
        body.append(_text(W - RIGHT - 2, TOP + 10, f"deadline {duration(slo.deadline_s)}: far above", "end", 10))
    for row in done:
        seconds = row.erasure_s or 0.0
        body.append(f'<circle cx="{x_of(row.finished_at.timestamp()):.1f}" cy="{y_of(seconds):.1f}" r="4" '
                    f'fill="{COLOURS[slo.state(seconds)]}"><title>{escape(row.request_id)}: '
                    f'{escape(duration(seconds))}</title></circle>')
    for t in (t0, t1):
        stamp = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")
        body.append(_text(x_of(t), H - BOTTOM + 16, stamp, "start" if t == t0 else "end", 10))
    body.append(_text(LEFT + plot_w / 2, H - 8, "erased at (UTC)", size=11))
    return _svg(name, title, body)


def per_class_accuracy(accuracies: Sequence[float], names: Sequence[str], erased: Sequence[int],
                       version: str) -> str:
    """The champion's test accuracy per class (0-100 %); erased classes in red, marked 'erased'."""
    name, title = "per-class-accuracy", f"Per-class test accuracy of the champion (version {version})"
    if not accuracies:
        return _empty(name, title, "no per-class accuracy recorded")
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / len(accuracies)
    body = _axes(plot_w, plot_h)
    for pct in (0, 25, 50, 75, 100):
        y = TOP + plot_h - pct / 100 * plot_h
        body += [f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{COLOURS["grid"]}"/>',
                 _text(LEFT - 6, y + 4, f"{pct} %", "end", 10)]
    for index, acc in enumerate(accuracies):
        is_erased = index in set(erased)
        height = max(0.0, min(100.0, acc)) / 100 * plot_h
        x = LEFT + index * slot + slot * 0.15
        label = names[index] if index < len(names) else str(index)
        colour = COLOURS["erased" if is_erased else "bar"]
        if is_erased:  # a pale red band over the whole slot: an erased class is seen even at 0 %
            body.append(f'<rect x="{LEFT + index * slot:.1f}" y="{TOP}" width="{slot:.1f}" height="{plot_h:.1f}" '
                        'fill="#fbe0e0"/>')
        body.append(f'<rect class="{"erased" if is_erased else "served"}" x="{x:.1f}" '
                    f'y="{TOP + plot_h - height:.1f}" width="{slot * 0.7:.1f}" height="{height:.1f}" '
                    f'fill="{colour}"><title>class {escape(label)}: {acc:.1f} %'
                    f'{" (erased)" if is_erased else ""}</title></rect>')
        body.append(_text(x + slot * 0.35, H - BOTTOM + 14, label, size=10))
        if is_erased:
            body.append(_text(x + slot * 0.35, TOP + plot_h - height - 4, f"erased {acc:.0f} %", size=9,
                              colour="erased"))
    body.append(_text(LEFT + plot_w / 2, H - 8, "class (red: erased)", size=11))
    return _svg(name, title, body)


def rejections(counts: dict[str, int]) -> str:
    """Rejected requests per failed gate check ('input': refused before the gate)."""
    name, title = "rejections", "Rejections by reason (failed gate check)"
    if not counts:
        return _empty(name, title, "no rejected request")
    rows = list(counts.items())[:8]
    top = max(count for _, count in rows)
    label_w, plot_w, bar_h = 150, W - 150 - RIGHT - 40, 28.0
    body = []
    for index, (reason, count) in enumerate(rows):
        y = TOP + index * bar_h
        width = count / top * plot_w
        body += [_text(label_w - 8, y + bar_h * 0.65, reason, "end", 11),
                 f'<rect x="{label_w}" y="{y + bar_h * 0.15:.1f}" width="{width:.1f}" height="{bar_h * 0.7:.1f}" '
                 f'fill="{COLOURS["late"]}"><title>{escape(reason)}: {count}</title></rect>',
                 _text(label_w + width + 6, y + bar_h * 0.65, str(count), "start", 11)]
    return _svg(name, title, body, TOP * 2 + bar_h * len(rows))


def _axes(plot_w: float, plot_h: float) -> list[str]:
    return [f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="{COLOURS["text"]}"/>',
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
            f'stroke="{COLOURS["text"]}"/>']


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 12 s``, ``5 h 7 min``, ``12 d 4 h``."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    hours = seconds % 86400 // 3600
    return f"{seconds // 86400} d {hours} h" if hours else f"{seconds // 86400} d"
