"""One table across datasets and backbones from `lau bench --each-class` results: does LAU with the
shipped defaults forget every class and stay within the gate's retain-drop bound everywhere?

    python -m bench.generalize docs/bench/generalize/*.json > docs/bench/generalize/summary.md

A row per result file: the original's accuracy, then per method (lau: the shipped, gate-aware
default; lau_paper: the paper's plain setting) over every single-class deletion: how many forgot
the class completely (train and test forget accuracy 0), the median and worst retain drop (points of
test accuracy on the classes kept, original minus candidate), how many the gate's bound (params.yaml
gate.max_retain_drop) would pass, the slowest unlearning; then the chain's worst drift against the
root and retrain's mean time where it ran.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from lau.config import load_params

HEADER = ("| dataset | arch | epochs | original test acc | method | forgot | median drop | worst drop | "
          "within gate | slowest unlearn s |")


def summarize(paths: list[Path], max_drop: float) -> list[str]:
    """The markdown lines of the table (a method's rows) and the chain/retrain lines under it."""
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    notes = []
    for path in paths:
        result = json.loads(path.read_text())
        original = result["original"]
        for method in ("lau", "lau_paper"):
            rows = [r for r in result["rows"] if r["method"] == method and len(r["forget_classes"]) == 1]
            if not rows:
                continue
            drops = [r["retain_drop"] for r in rows]
            forgot = sum(r["forget_acc"] == 0 and r["test_forget_acc"] == 0 for r in rows)
            within = sum(d <= max_drop for d in drops)
            lines.append(f"| {result['dataset']} | {result['arch']} | {original['epochs']} | "
                         f"{original['test_acc']:.2f} | {method} | {forgot}/{len(rows)} | "
                         f"{statistics.median(drops):.2f} | {max(drops):.2f} | {within}/{len(rows)} | "
                         f"{max(r['unlearn_s'] for r in rows):.3f} |")
        notes.append(_notes(path.name, result))
    return lines + [""] + notes


def _notes(name: str, result: dict) -> str:
    parts = [f"- `{name}`:"]
    chain = (result.get("chain") or {}).get("rows") or []
    if chain:
        worst = max(r["root_retain_drop"] for r in chain)
        parts.append(f"chain {result['chain']['chain']} forgot every step: "
                     f"{all(r['forget_acc'] == 0 and r['test_forget_acc'] == 0 for r in chain)}, "
                     f"worst drift against the root {worst:.2f} points;")
    retrain = [r for r in result["rows"] if r["method"] == "retrain"]
    lau = [r for r in result["rows"] if r["method"] == "lau"]
    if retrain and lau:
        ratio = statistics.median(r["unlearn_s"] for r in retrain) / statistics.median(r["unlearn_s"] for r in lau)
        gap = max(r["original_test_retain_acc"] - r["test_retain_acc"] for r in retrain)
        parts.append(f"retrain median {statistics.median(r['unlearn_s'] for r in retrain):.1f} s over "
                     f"{len(retrain)} class sets, LAU median {statistics.median(r['unlearn_s'] for r in lau):.3f} s "
                     f"({ratio:,.0f}x); the original trails a retrain on the retained classes by at most "
                     f"{gap:.2f} points (negative: the original is better)")
    return " ".join(parts)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m bench.generalize RESULT.json ...", file=sys.stderr)
        return 2
    max_drop = load_params("params.yaml").gate.max_retain_drop
    try:
        lines = summarize([Path(p) for p in argv], max_drop)
    except (OSError, ValueError, KeyError) as err:
        print(f"bench.generalize: not a `lau bench --each-class` result: {err}", file=sys.stderr)
        return 2
    print(f"Gate bound: retain drop <= {max_drop} points (params.yaml gate.max_retain_drop).\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
