"""The `dvc repro` pipeline's stages: ``python -m lau.stages <stage>``, as dvc.yaml runs them.

    erasures   the model's erasure record    -> data/erasures.json (`lau erasures --write`, always run)
    prepare    params data.*, erasures       -> data/prepared/dataset.safetensors
    train      model.*, train.*, models/team/ -> models/original/, metrics/train.json
               (adopts the team's model in models/team/ when model.arch is torchvision:/timm:)
    featurize  unlearn.depth, features.*     -> cache/features/features.safetensors
    unlearn    unlearn.*, data.excluded_classes -> models/unlearned/
    evaluate   gate.*, evaluation.*          -> metrics/unlearn.json, plots/

Each stage reads params.yaml (strictly: a bad key or value is one line on stderr and exit 2, before
anything is written) and the files of the stages before it, and calls the same lau.pipeline
functions as the Prefect tasks. Everything written is a function of the declared deps and params:
no timings, timestamps or absolute paths (timings go to stderr), so two clones give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lau import pipeline
from lau.checkpoint import load_checkpoint, save_checkpoint
from lau.config import Params, load_params
from lau.data import load_split, save_split
from lau.erased import erased_evidence, erased_split
from lau.errors import BadInput
from lau.evaluation import evaluate_candidate
from lau.features import load_features, save_features
from lau.gate import verify
from lau.metrics import CONTRACT_KEYS
from lau.models import clone
from lau.report import plot_confusion, plot_per_class
from lau.unlearn import LAUResult
from lau.utils import file_md5, file_sha256, json_safe
from lau.zoo import is_adopted_arch

ERASURES = Path("data/erasures.json")
PREPARED = Path("data/prepared/dataset.safetensors")
ORIGINAL = Path("models/original")
FEATURES = Path("cache/features/features.safetensors")
UNLEARNED = Path("models/unlearned")
TEAM = Path("models/team")  # a team's own weights: a declared dependency of `train`
TRAIN_METRICS = Path("metrics/train.json")
UNLEARN_METRICS = Path("metrics/unlearn.json")
PER_CLASS = Path("plots/per_class.json")
PER_CLASS_PNG = Path("plots/per_class.png")
CONFUSION_PNG = Path("plots/confusion.png")
TRAIN_METRICS_BATCH = 512  # fixed, so that train depends on model.* and train.* only


def erased_classes() -> tuple[int, ...]:
    """The model's erased classes, as the `erasures` stage wrote them (none without that file)."""
    if not ERASURES.is_file():
        return ()
    try:
        return tuple(int(c) for c in json.loads(ERASURES.read_text())["erased_classes"])
    except (ValueError, KeyError, TypeError) as err:
        raise BadInput(f"{ERASURES} is unreadable ({err}); run `dvc repro` to write it again") from None


def prepare(params: Params) -> None:
    """Load, exclude (params' classes and every erased one), cap and split the dataset into one
    safetensors file (its md5 = data version)."""
    excluded = tuple(sorted(set(params.data.excluded_classes) | set(erased_classes())))
    save_split(pipeline.prepare_data(params.replace("data", excluded_classes=list(excluded))), PREPARED)


def train(params: Params) -> None:
    """Train the original model; its checkpoint and its accuracies (on depth-1 features), with the
    classes its data left out (``excluded_classes``, of which ``erased_classes`` from the record)."""
    split, data_version = load_split(PREPARED), file_md5(PREPARED)
    origin: dict[str, Any] = {}
    if is_adopted_arch(params.model.arch):
        weights = team_weights(params)
        model = pipeline.adopt_original(params, split, weights)
        origin = {"adopted_weights_sha256": file_sha256(weights)}
    else:
        model = pipeline.train_original(params, split)
    save_checkpoint(model, ORIGINAL, metadata={
        "stage": "train", "data_version": data_version, **origin,
        "params": {"model": _section(params, "model"), "train": _section(params, "train")}})
    fixed = params.replace("features", batch_size=TRAIN_METRICS_BATCH)
    report = pipeline.train_metrics(model, pipeline.featurize(fixed, model, split, data_version, depth=1))
    write_json(TRAIN_METRICS, {**report.metrics, "train_images": len(split.train_labels),
                               "val_images": len(split.val_labels), "test_images": len(split.test_labels),
                               "excluded_classes": list(split.excluded_classes),
                               "erased_classes": [c for c in erased_classes() if c in split.excluded_classes]})


def team_weights(params: Params) -> Path:
    """``model.weights``: a file under models/team/, so that `dvc repro` reruns `train` when it changes."""
    if not params.model.weights:
        raise BadInput(f"model.arch '{params.model.arch}' is adopted: set model.weights to its state dict "
                       f"under {TEAM}/")
    path = Path(params.model.weights)
    if path.is_absolute() or TEAM not in path.parents:
        raise BadInput(f"model.weights '{path}' must be a relative path under {TEAM}/ (train's declared "
                       "dependency: weights elsewhere would change without `dvc repro` noticing)")
    return path


def featurize(params: Params) -> None:
    """F_f features of every image at ``unlearn.depth``, keyed by (extractor, data version, depth)."""
    model, _ = load_checkpoint(ORIGINAL)
    features = pipeline.featurize(params, model, load_split(PREPARED), file_md5(PREPARED))
    save_features(features, FEATURES.parent)


def unlearn(params: Params) -> None:
    """LAU on the original model's head for ``unlearn.forget_classes`` still in the data (a class the
    model has erased is not in it: nothing to unlearn); params and lineage in its metadata."""
    parent, parent_config = load_checkpoint(ORIGINAL)
    features = load_features(FEATURES)
    if features.depth != params.unlearn.depth:
        raise BadInput(f"{FEATURES} holds depth-{features.depth} features but unlearn.depth is "
                       f"{params.unlearn.depth}; run `dvc repro` to refresh them")
    excluded = tuple(sorted(set(params.data.excluded_classes) | set(erased_classes())))
    to_forget = tuple(c for c in params.unlearn.forget_classes if c not in excluded)
    already_erased = [c for c in params.unlearn.forget_classes if c in excluded]
    if to_forget:
        result = pipeline.unlearn_classes(params, parent, features, to_forget, excluded=excluded)
        candidate, forgotten, lau = result.candidate, result.forgotten, result.result
    else:  # every class to forget was left out of the training data: the original already forgets it
        candidate, forgotten, lau = clone(parent), (), LAUResult(0, 0, True, 0.0)
    parent_meta = parent_config.get("metadata", {})
    save_checkpoint(candidate, UNLEARNED, depth=features.depth, metadata={
        "stage": "unlearn", "method": params.unlearn.method,
        "params": {"unlearn": _section(params, "unlearn"), "data": {"excluded_classes": list(excluded)}},
        "forget_classes": list(to_forget), "forgotten": list(forgotten), "already_erased": already_erased,
        "feature_cache_key": features.key,
        "parent": {"weights_sha256": parent_config["weights_sha256"],
                   "data_version": parent_meta.get("data_version"), "params": parent_meta.get("params")},
        "lau": {"steps": lau.steps, "epochs": lau.epochs, "converged": lau.converged}})


def evaluate(params: Params) -> None:
    """Every CONTRACT metric, the gate's verdict, per-class accuracies and confusion matrices. Classes
    to forget that the data left out (erased) are checked on their own images (lau.erased)."""
    parent, _ = load_checkpoint(ORIGINAL)
    candidate, config = load_checkpoint(UNLEARNED)
    meta = config["metadata"]
    forgotten, already_erased = tuple(meta["forgotten"]), tuple(meta.get("already_erased", ()))
    features = load_features(FEATURES)
    evaluation = evaluate_candidate(parent, candidate, features, forgotten, cfg=params.evaluation)
    metrics = dict(evaluation.metrics)
    if already_erased:
        erased = erased_evidence(candidate, features, erased_split(params.data, already_erased), already_erased,
                                 with_probe=False)
        for key in ("forget_acc", "test_forget_acc"):
            metrics[key] = max(v for v in (metrics.get(key), erased[key]) if v is not None and v == v)
    missing = [k for k in CONTRACT_KEYS if k not in metrics]
    if missing:  # pragma: no cover - a contract break in lau.metrics, not a user error
        raise RuntimeError(f"evaluate_candidate lost CONTRACT keys: {missing}")
    before, after = evaluation.before, evaluation.after
    original = {k: before.metrics[k] for k in ("forget_acc", "test_forget_acc", "retain_acc",
                                               "test_retain_acc", "mia_efficacy")}
    write_json(UNLEARN_METRICS, {**metrics, "forgotten_classes": sorted(set(forgotten) | set(already_erased)),
                                 "already_erased_classes": list(already_erased),
                                 "lau_steps": meta["lau"]["steps"], "lau_converged": meta["lau"]["converged"],
                                 "original": original, "gate": verify(metrics, params.gate).to_json()})
    names = list(parent.spec.class_names)
    before_acc, after_acc = before.per_class_test_acc, after.per_class_test_acc
    write_json(PER_CLASS, [{"class": c, "name": names[c], "before": before_acc[c], "after": after_acc[c]}
                           for c in range(len(names)) if before_acc[c] is not None])  # excluded: no row
    plot_per_class(before_acc, after_acc, names, list(forgotten), PER_CLASS_PNG)
    plot_confusion(before.confusion_test, after.confusion_test, names, CONFUSION_PNG)


STAGES: dict[str, Callable[[Params], None]] = {
    "prepare": prepare, "train": train, "featurize": featurize, "unlearn": unlearn, "evaluate": evaluate}
# The `erasures` stage is not here: it reads S3, which the engine never does (`lau erasures --write`).


def compare_metrics(expected: dict, actual: dict, tolerance: float = 0.01) -> list[str]:
    """One line per metric of ``expected`` that ``actual`` lacks or misses by more than ``tolerance``.

    Nested dicts and lists are compared leaf by leaf under dotted keys (``gate.passed``,
    ``gate.checks.0.value``). Numbers (accuracies are percentages) may differ by ``tolerance``
    (absolute); booleans, strings and None must be equal; NaN and None count as the same "no value".
    Keys only in ``actual`` are ignored: metrics files may grow. An empty list means "reproduced".
    """
    expected_flat, actual_flat = _flatten(expected), _flatten(actual)
    mismatches = []
    for key, want in expected_flat.items():
        if key not in actual_flat:
            mismatches.append(f"{key}: expected {_show(want)}, missing")
            continue
        got = actual_flat[key]
        if _is_number(want) and _is_number(got):
            if math.isnan(want) and math.isnan(got):
                continue
            if math.isnan(want) or math.isnan(got) or abs(want - got) > tolerance:
                mismatches.append(f"{key}: expected {_show(want)}, got {_show(got)} "
                                  f"(tolerance {tolerance:g})")
        elif _normal(want) != _normal(got):
            mismatches.append(f"{key}: expected {_show(want)}, got {_show(got)}")
    return mismatches


def write_json(path: Path, data: Any) -> None:
    """Stable JSON: fixed key order, NaN as null, trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def _section(params: Params, name: str) -> dict:
    return params.to_dict()[name]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _normal(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _show(value: Any) -> str:
    return f"{value:g}" if _is_number(value) else json.dumps(_normal(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lau.stages", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    args = parser.parse_args(argv)

    try:
        params = pipeline.resolve_params(load_params(args.params))  # a bad value stops the first stage
        start = time.perf_counter()
        STAGES[args.stage](params)
    except BadInput as err:
        print(f"lau.stages {args.stage}: {err}", file=sys.stderr)
        return 2
    print(f"[{args.stage}] done in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
