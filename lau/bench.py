"""Side-by-side benchmark: one trained model, each method on its own copy, same forget classes."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from lau.baselines import BASELINES, BaselineContext
from lau.config import Params
from lau.data import check_classes, prepare
from lau.features import extract_features
from lau.metrics import CONTRACT_KEYS, evaluate, outputs_from_features, outputs_from_images
from lau.models import SplitModel
from lau.report import bench_table, plot_bench
from lau.train import train_model
from lau.unlearn import unlearn
from lau.utils import progress

LAU_METHODS = ("lau", "lau_paper")  # on cached features; lau_paper = the paper's plain setting
METHODS = (*LAU_METHODS, *BASELINES)
ROW_KEYS = ("forget_acc", "test_forget_acc", "retain_acc", "test_retain_acc", "mia_efficacy",
            "probe_forget_acc")


def check_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    from lau.errors import BadInput

    for method in methods:
        if method not in METHODS:
            raise BadInput(f"unknown method '{method}'; choose from: {', '.join(METHODS)}")
    if not methods:
        raise BadInput(f"no method given; choose from: {', '.join(METHODS)}")
    return methods


def run_bench(params: Params, methods: tuple[str, ...], class_sets: list[tuple[int, ...]], *,
              baseline_sets: int | None = None, chain: list[int] | None = None) -> dict:
    """Train the original once, extract features once, then run every method for every class set.

    ``baseline_sets`` = N runs the image-level baselines (retrain, ...) on the first N class sets
    only (the LAU methods run on all): a retrain per class is out of reach for large backbones.
    ``chain`` also runs those sequential deletions (``run_chain``) on the same original, under
    ``result["chain"]``: one training instead of two.
    """
    check_methods(methods)
    split = prepare(params.data)
    class_sets = [check_classes(c, split.num_classes, excluded=split.excluded_classes) for c in class_sets]
    _warm_up()
    build_spec_check(params, split)
    trained = train_model(split, params.model, params.train, label="original")
    original = trained.model
    start = time.perf_counter()
    features = extract_features(original, split, params.unlearn.depth, "bench", params.features.batch_size)
    features_s = time.perf_counter() - start
    result = {"dataset": params.data.dataset, "arch": params.model.arch, "depth": params.unlearn.depth,
              "forget_classes": list(class_sets[0]), "train_s": trained.report.seconds,
              "features_s": round(features_s, 4), "original": _report_json(trained.report),
              "images": {"train": len(split.train_labels), "val": len(split.val_labels),
                         "test": len(split.test_labels), "classes": split.num_classes}, "rows": []}
    for index, classes in enumerate(class_sets):
        original_metrics = evaluate(outputs_from_features(original, features), classes, split.num_classes,
                                    with_probe=False)
        for method in methods:
            if method not in LAU_METHODS and baseline_sets is not None and index >= baseline_sets:
                continue
            progress(f"[bench] {method} on classes {list(classes)}")
            row = _run_method(method, original, features, split, classes, params)
            row["original_test_retain_acc"] = original_metrics["metrics"]["test_retain_acc"]
            row["retain_drop"] = round(row["original_test_retain_acc"] - row["test_retain_acc"], 4)
            result["rows"].append(row)
    if chain:
        result["chain"] = {"chain": list(chain), "rows": chain_rows(params, original, features, chain)}
    return result


def build_spec_check(params: Params, split) -> None:
    """A depth out of range fails before minutes of training, not after."""
    from lau.train import new_model

    new_model(split, params.model, params.train.seed).check_depth(params.unlearn.depth)


def _report_json(report) -> dict:
    return {k: v for k, v in report.to_json().items() if k != "history"} | {"history": [
        {"epoch": r.epoch, "val_acc": r.val_acc} for r in report.history]}


def _run_method(method: str, original: SplitModel, features, split, classes, params: Params) -> dict:
    if method in LAU_METHODS:
        cfg = dataclasses.replace(params.unlearn, method=method)
        candidate, lau_result = unlearn(original, features, classes, cfg)
        seconds = lau_result.seconds
        outputs = outputs_from_features(candidate, features)
    else:
        ctx = BaselineContext(split, classes, params.train, params.model, params.baselines)
        start = time.perf_counter()
        candidate = BASELINES[method](original, ctx)
        seconds = time.perf_counter() - start
        outputs = outputs_from_images(candidate, split, params.features.batch_size)
    metrics = evaluate(outputs, classes, split.num_classes)["metrics"]
    row = {"method": method, "forget_classes": list(classes), "unlearn_s": round(seconds, 5)}
    row.update({k: metrics[k] for k in ROW_KEYS})
    if method in LAU_METHODS:
        row["features_s"] = None  # filled by the caller's top-level features_s
        row.update(steps=lau_result.steps, converged=lau_result.converged, candidate=lau_result.candidate,
                   val_retain_drop=lau_result.val_retain_drop)
    return row


def _warm_up() -> None:
    """One throwaway forward/backward so no method pays PyTorch's first-call cost."""
    layer = torch.nn.Linear(8, 8)
    layer(torch.randn(4, 8)).sum().backward()


def write_outputs(result: dict, json_path: str | Path) -> dict[str, Path]:
    """The JSON of CONTRACT.md, a markdown table and a PNG plot beside it."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    for row in result["rows"]:
        if row["method"] in LAU_METHODS:
            row["features_s"] = result["features_s"]
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    table_path = json_path.with_suffix(".md")
    header = (f"Dataset `{result['dataset']}`, arch `{result['arch']}`, LAU depth {result['depth']}; "
              f"original trained in {result['train_s']} s; LAU's one-off feature extraction "
              f"{result['features_s']} s (not in its unlearn_s).\n\n")
    blocks = []
    for classes in sorted({tuple(r["forget_classes"]) for r in result["rows"]}):
        rows = [r for r in result["rows"] if tuple(r["forget_classes"]) == classes]
        blocks.append(f"Forget classes {list(classes)}:\n\n{bench_table(rows)}")
    table_path.write_text(header + "\n".join(blocks))
    first = [r for r in result["rows"] if r["forget_classes"] == result["forget_classes"]]
    plot_path = plot_bench(first, json_path.with_suffix(".png"),
                           f"{result['dataset']} / {result['arch']}: forget {result['forget_classes']}")
    return {"json": json_path, "table": table_path, "plot": plot_path}


def speedups(result: dict) -> list[dict]:
    """LAU's unlearn_s against every other method's, per class set (for the summary line)."""
    out = []
    for classes in sorted({tuple(r["forget_classes"]) for r in result["rows"]}):
        rows = {r["method"]: r for r in result["rows"] if tuple(r["forget_classes"]) == classes}
        if "lau" not in rows:
            continue
        lau_s = max(rows["lau"]["unlearn_s"], 1e-6)
        out.append({"forget_classes": list(classes),
                    **{f"x_vs_{m}": round(r["unlearn_s"] / lau_s, 1) for m, r in rows.items() if m != "lau"}})
    return out


assert set(ROW_KEYS) <= set(CONTRACT_KEYS)


def run_chain(params: Params, chain: list[int]) -> dict:
    """Sequential deletions on one lineage (forget chain[0], then chain[1] from that version, ...):
    the cumulative forget / test-forget accuracy and retain drop after every step."""
    split = prepare(params.data)
    for cls in chain:
        check_classes((cls,), split.num_classes, excluded=split.excluded_classes)
    _warm_up()
    build_spec_check(params, split)
    trained = train_model(split, params.model, params.train, label="original")
    features = extract_features(trained.model, split, params.unlearn.depth, "chain", params.features.batch_size)
    return {"dataset": params.data.dataset, "arch": params.model.arch, "method": params.unlearn.method,
            "balanced": params.unlearn.balanced, "margin": params.unlearn.margin, "chain": chain,
            "original": _report_json(trained.report), "rows": chain_rows(params, trained.model, features, chain)}


def chain_rows(params: Params, original: SplitModel, features, chain: list[int]) -> list[dict]:
    """Forget chain[0] from the original, chain[1] from that candidate, ...: one row per step."""
    from lau.pipeline import evaluate_candidate, unlearn_classes

    rows, parent, done = [], original, ()
    for cls in chain:
        step = unlearn_classes(params, parent, features, (cls,), done)
        metrics = evaluate_candidate(parent, step.candidate, features, step.forgotten,
                                     cfg=params.evaluation).metrics
        root = _test_retain_acc(original, features, step.forgotten)
        rows.append({"forgotten": list(step.forgotten), "steps": step.result.steps,
                     "converged": step.result.converged, "unlearn_s": round(step.result.seconds, 5),
                     "candidate": step.result.candidate,
                     **{k: metrics[k] for k in ("forget_acc", "test_forget_acc", "test_retain_acc",
                                                "retain_drop", "test_predicted_as_forgotten")},
                     "root_retain_drop": round(root - metrics["test_retain_acc"], 4)})
        parent, done = step.candidate, step.forgotten
    return rows


def _test_retain_acc(model: SplitModel, features, forgotten: tuple[int, ...]) -> float:
    """The lineage root's accuracy on the test images of the classes still served."""
    from lau.data import class_mask
    from lau.metrics import accuracy

    keep = ~class_mask(features.test_labels, forgotten)
    return accuracy(outputs_from_features(model, features).test_logits[keep], features.test_labels[keep])
