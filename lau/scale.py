"""The scale benchmark: what a deletion's engine work costs as the dataset grows.

Everything here is SYNTHETIC: cached "features" drawn from Gaussian class clusters (label-sorted, as an
image folder is), shaped like a ResNet18's penultimate features, and a ResNet18 whose classification
layer is set to the clusters' linear discriminant fitted on the synthetic train rows. No image is read
and no network is trained. On these, each size runs what a deletion runs (``unlearn_classes``, then
``evaluate_parent`` and ``evaluate_candidate``, then ``verify``) and reports wall seconds and the peak
resident memory above the phase's start (sampled every 10 ms from /proc/self/statm).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lau.config import Params
from lau.evaluation import evaluate_candidate, evaluate_parent
from lau.features import FeatureSet
from lau.gate import verify
from lau.models import ModelSpec, SplitModel, build_model
from lau.pipeline import unlearn_classes
from lau.probe import probe_record
from lau.utils import progress

SIZES = (5_000, 50_000, 200_000, 500_000)
CLASS_COUNTS = (10, 100)
DIM = 512
FORGET_CLASSES = (3,)
CHUNK = 65_536  # rows generated at a time: no (N, D) temporary beside the features themselves


@dataclass(frozen=True)
class Synthetic:
    """A synthetic feature cache and the parent model that 'was trained' on it."""

    features: FeatureSet
    parent: SplitModel
    generate_s: float


def synthetic_features(train_rows: int, dim: int, num_classes: int, seed: int = 0, *,
                       test_fraction: float = 0.2, separation: float = 0.15, train_noise: float = 0.8,
                       offset: float = 1.0) -> FeatureSet:
    """Label-sorted Gaussian clusters: class centres ~ offset + N(0, separation^2 I), the ``offset``
    a positive mean every dimension shares, as post-ReLU features do (without it, LAU's gradient steps
    barely move the logits and it needs 10x the steps it needs on real features); test rows have unit
    noise, train rows ``train_noise`` (the gap a trained network shows between its own training
    images and new ones, so that the MIA has a membership signal to find); test rows are
    ``test_fraction`` of all rows (train_rows / 4 at 0.2), as the product's stratified split makes."""
    generator = torch.Generator().manual_seed(seed)
    centres = offset + separation * torch.randn(num_classes, dim, generator=generator)

    def draw(rows: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(rows) * num_classes // max(rows, 1)  # sorted by class, balanced
        feats = torch.empty(rows, dim)
        for start in range(0, rows, CHUNK):
            part = feats[start: start + CHUNK]
            part.normal_(std=noise, generator=generator).add_(centres[labels[start: start + CHUNK]])
        return feats, labels

    test_rows = round(train_rows * test_fraction / (1 - test_fraction))
    train_features, train_labels = draw(train_rows, train_noise)
    test_features, test_labels = draw(test_rows, 1.0)
    key = f"synthetic-{train_rows}x{dim}-k{num_classes}-s{seed}"
    return FeatureSet(key=key, depth=1, train_features=train_features, train_labels=train_labels,
                      test_features=test_features, test_labels=test_labels)


def synthetic_parent(features: FeatureSet, num_classes: int) -> SplitModel:
    """A ResNet18 (small stem, 32x32 RGB) whose head is the clusters' linear discriminant, fitted on
    the train rows: W_k = m_k / s^2, b_k = -|m_k|^2 / (2 s^2), m_k class means, s^2 pooled variance."""
    dim = features.train_features.shape[1]
    spec = ModelSpec(arch="resnet18", num_classes=num_classes, in_channels=3, image_size=32,
                     class_names=tuple(f"synthetic {c}" for c in range(num_classes)))
    model = build_model(spec).eval()
    sums = torch.zeros(num_classes, dim, dtype=torch.float64)
    for start in range(0, len(features.train_labels), CHUNK):  # chunks: no float64 copy of the cache
        rows = slice(start, start + CHUNK)
        sums.index_add_(0, features.train_labels[rows], features.train_features[rows].double())
    means = sums / torch.bincount(features.train_labels, minlength=num_classes).clamp_min(1)[:, None]
    squared = 0.0
    for start in range(0, len(features.train_labels), CHUNK):
        rows = slice(start, start + CHUNK)
        residual = features.train_features[rows].double() - means[features.train_labels[rows]]
        squared += float((residual ** 2).sum())
    variance = squared / features.train_features.numel()
    if model.blocks[-1].in_features != dim:  # another feature width: a head of that width (depth 1 only)
        model.blocks[-1] = torch.nn.Linear(dim, num_classes)
    head = model.blocks[-1]
    with torch.no_grad():
        head.weight.copy_(means / variance)
        head.bias.copy_(-0.5 * (means ** 2).sum(1) / variance)
    return model


def make_synthetic(train_rows: int, dim: int, num_classes: int, seed: int = 0) -> Synthetic:
    start = time.perf_counter()
    features = synthetic_features(train_rows, dim, num_classes, seed)
    return Synthetic(features, synthetic_parent(features, num_classes), time.perf_counter() - start)


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every 10 ms (Linux /proc/self/statm)."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mb(self) -> float:
        return round((self.peak - self.start) / 2**20, 1)


def _release_freed_memory() -> None:
    """glibc's malloc_trim: give freed heap pages back to the system, so RSS reflects what is live."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: RSS deltas may then under-count a phase that reuses freed memory
        pass


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Timed:
    """A call's result, wall seconds, CPU seconds of the process (less sensitive to other jobs on a
    shared machine) and peak resident memory above the level at its start."""

    result: Any
    seconds: float
    cpu_seconds: float
    peak_mb: float


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Timed:
    gc.collect()
    _release_freed_memory()  # else a phase reusing memory freed by the last one shows no growth
    with PeakMemory() as memory:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return Timed(result, round(seconds, 4), round(cpu_seconds, 4), memory.mb)


def run_case(params: Params, synthetic: Synthetic, forget_classes: tuple[int, ...] = FORGET_CLASSES) -> dict:
    """One size: the probe record (once per feature cache), then what a deletion runs: LAU, the
    parent's side of the evaluation, the candidate's, and the gate, each timed."""
    features, parent, cfg = synthetic.features, synthetic.parent, params.evaluation
    probe = _timed(probe_record, parent, features, cfg)
    lau = _timed(unlearn_classes, params, parent, features, forget_classes)
    unlearned = lau.result
    side = _timed(evaluate_parent, parent, features, unlearned.forgotten, cfg, probe=probe.result)
    candidate = _timed(evaluate_candidate, parent, unlearned.candidate, features, unlearned.forgotten,
                       parent_side=side.result, cfg=cfg)
    evaluation = candidate.result
    gate = _timed(verify, evaluation.metrics, params.gate)
    metrics = evaluation.metrics
    forget_rows = int(sum((features.train_labels == c).sum() for c in unlearned.forgotten))
    return {
        "num_classes": parent.spec.num_classes, "train_rows": len(features.train_labels),
        "test_rows": len(features.test_labels), "dim": features.train_features.shape[1],
        "forget_rows": forget_rows, "generate_s": round(synthetic.generate_s, 2),
        "probe_s": probe.seconds, "probe_cpu_s": probe.cpu_seconds, "probe_peak_mb": probe.peak_mb,
        "lau_s": lau.seconds, "lau_engine_s": round(unlearned.result.seconds, 4), "lau_steps": unlearned.result.steps,
        "evaluate_parent_s": side.seconds, "evaluate_candidate_s": candidate.seconds, "gate_s": gate.seconds,
        "total_cold_s": round(lau.seconds + side.seconds + candidate.seconds + gate.seconds, 4),
        "total_warm_s": round(lau.seconds + candidate.seconds + gate.seconds, 4),
        "lau_cpu_s": lau.cpu_seconds, "evaluate_parent_cpu_s": side.cpu_seconds,
        "evaluate_candidate_cpu_s": candidate.cpu_seconds,
        "lau_peak_mb": lau.peak_mb, "evaluate_parent_peak_mb": side.peak_mb,
        "evaluate_candidate_peak_mb": candidate.peak_mb,
        "parent_test_acc": side.result.metrics["test_retain_acc"], "gate_passed": gate.result.passed,
        "load_1min": round(os.getloadavg()[0], 1),
        **{key: metrics[key] for key in ("forget_acc", "test_forget_acc", "retain_drop", "mia_efficacy",
                                         "probe_forget_acc", "retain_acc_images", "test_retain_acc_images",
                                         "mia_members", "mia_non_members", "mia_targets", "probe_train_images")},
    }


def run_scale(sizes: tuple[int, ...] = SIZES, dim: int = DIM, class_counts: tuple[int, ...] = CLASS_COUNTS,
              seed: int = 0, params: Params | None = None) -> dict:
    """Every (class count, size) on synthetic features; progress on stderr. Sizes run smallest
    first and each case's features are freed before the next one is drawn."""
    params = params or Params()
    _warm_up(params)
    rows = []
    for num_classes in class_counts:
        for size in sorted(sizes):
            progress(f"[scale] synthetic {size} x {dim}, {num_classes} classes: drawing features")
            synthetic = make_synthetic(size, dim, num_classes, seed)
            rows.append(run_case(params, synthetic))
            progress(f"[scale] {size} rows, {num_classes} classes: LAU {rows[-1]['lau_s']} s, evaluation "
                     f"{rows[-1]['evaluate_parent_s']} + {rows[-1]['evaluate_candidate_s']} s")
            del synthetic
            gc.collect()
    return {"synthetic": True, "dim": dim, "seed": seed, "forget_classes": list(FORGET_CLASSES),
            "evaluation": asdict(params.evaluation), "unlearn": asdict(params.unlearn),
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "rows": rows}


def _warm_up(params: Params) -> None:
    """Imports and first calls before anything is timed, as in a long-running worker."""
    synthetic = make_synthetic(500, DIM, 5, seed=99)
    unlearned = unlearn_classes(params, synthetic.parent, synthetic.features, FORGET_CLASSES)
    evaluate_candidate(synthetic.parent, unlearned.candidate, synthetic.features, unlearned.forgotten,
                       cfg=params.evaluation)


SCALE_COLUMNS = ("num_classes", "train_rows", "test_rows", "forget_rows", "probe_s", "lau_s", "lau_steps",
                 "evaluate_parent_s", "evaluate_candidate_s", "gate_s", "total_cold_s", "total_warm_s",
                 "lau_cpu_s", "evaluate_parent_cpu_s", "evaluate_candidate_cpu_s", "probe_peak_mb",
                 "lau_peak_mb", "evaluate_parent_peak_mb", "evaluate_candidate_peak_mb", "forget_acc",
                 "test_forget_acc", "retain_drop", "mia_efficacy", "probe_forget_acc", "gate_passed", "load_1min")
MIA_COLUMNS = ("num_classes", "train_rows", "model", "cap", "mean", "min", "max", "uncapped_mean",
               "uncapped_min", "uncapped_max", "worst_gap", "seconds", "uncapped_seconds")

MIA_GRID_COLUMNS = ("num_classes", "train_rows", "model", "efficacy_every_point", "efficacy", "worst_gap", "points",
                    "distinct_points", "fit_every_point_s", "fit_s")


def markdown_table(rows: list[dict], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def write_scale_outputs(result: dict, json_path: str | Path) -> dict[str, Path]:
    """The JSON and a markdown table beside it (``.md``), saying whether the features are synthetic."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    table_path = json_path.with_suffix(".md")
    if result.get("evidence") == "mia grid":
        body = markdown_table(result["summary"], MIA_GRID_COLUMNS if result["synthetic"] else ("dataset", *MIA_GRID_COLUMNS))
    elif "summary" in result:
        body = markdown_table(result["summary"], MIA_COLUMNS)
    else:
        body = markdown_table(result["rows"], SCALE_COLUMNS)
    load = f"Load average at the end: {', '.join(f'{x:.1f}' for x in result['load_average'])}.\n\n"
    header = (f"SYNTHETIC cached features ({result['dim']}-d Gaussian class clusters, a ResNet18 head set "
              f"to their discriminant; no image, no training). {load}") if result.get("synthetic", True) else \
        f"Real cached features: each dataset's default model, trained with params.yaml. {load}"
    table_path.write_text(header + body)
    return {"json": json_path, "table": table_path}
