"""Studies behind the evaluation's sample caps and the MIA's fit: on the scale benchmark's SYNTHETIC
features (lau/scale.py), the MIA's and the probe's values at each cap against every image
(``run_caps``) and the MIA's merged-point SVC against libsvm on every confidence (``run_mia_grid``);
the latter on real cached features too (``run_mia_grid_data``: each dataset's default model).
Commands and results: docs/results-scale.md."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import replace

import numpy as np
import torch

from lau.config import EvaluationConfig, Params
from lau.evaluation import evaluation_rows
from lau.features import FeatureSet
from lau.metrics import mia, outputs_from_features
from lau.models import SplitModel, clone
from lau.pipeline import unlearn_classes
from lau.probe import probe_record
from lau.scale import CLASS_COUNTS, DIM, FORGET_CLASSES, _timed, make_synthetic, write_scale_outputs
from lau.utils import progress

__all__ = ["run_caps", "run_mia_grid", "run_mia_grid_data", "summarize_caps", "write_scale_outputs"]


def run_caps(evidence: str, sizes: tuple[int, ...] = (5_000, 50_000), dim: int = DIM,
             class_counts: tuple[int, ...] = CLASS_COUNTS, caps: tuple[int, ...] = (250, 500, 1000, 2000),
             seeds: tuple[int, ...] = (0, 1, 2, 3, 4), params: Params | None = None) -> dict:
    """``evidence`` ("mia" or "probe") at each cap against its uncapped value, per seed, on three
    models of each synthetic case: the parent, the LAU candidate, and "midway" (a head halfway between
    them: forget images half unlearned, where the MIA's efficacy is neither 0 nor 100 and least
    stable). The capped value reads what ``evaluate_candidate`` reads."""
    params = params or Params()
    rows = []
    for num_classes in class_counts:
        for size in sorted(sizes):
            synthetic = make_synthetic(size, dim, num_classes)
            unlearned = unlearn_classes(params, synthetic.parent, synthetic.features, FORGET_CLASSES)
            models = {"parent": synthetic.parent, "midway": _midway(synthetic.parent, unlearned.candidate),
                      "candidate": unlearned.candidate}
            if evidence == "probe":  # at depth 1 it reads the cached features only: one value per lineage
                models = {"any model": synthetic.parent}
            for name, model in models.items():
                progress(f"[{evidence} caps] {size} rows, {num_classes} classes, {name}")
                labels = {"num_classes": num_classes, "train_rows": size, "model": name}
                rows += _caps_case(evidence, model, synthetic.features, unlearned.forgotten, caps, seeds,
                                   params.evaluation, labels)
            del synthetic, unlearned, models
            gc.collect()
    return {"synthetic": True, "evidence": evidence, "dim": dim, "caps": list(caps), "seeds": list(seeds),
            "load_average": list(os.getloadavg()), "rows": rows, "summary": summarize_caps(rows)}


def _midway(parent: SplitModel, candidate: SplitModel) -> SplitModel:
    model = clone(parent)
    with torch.no_grad():
        for mine, theirs in zip(model.blocks[-1].parameters(), candidate.blocks[-1].parameters()):
            mine.add_(theirs).mul_(0.5)
    return model


def _evidence(evidence: str, model: SplitModel, features: FeatureSet, forgotten: tuple[int, ...],
              cfg: EvaluationConfig) -> float:
    """The MIA efficacy or the probe's forget accuracy as an evaluation with ``cfg`` computes it;
    ``cfg.*_sample`` 0 reads every image (and every retain image: retain_sample 0)."""
    if evidence == "probe":
        return probe_record(model, features, cfg).result(forgotten).forget_acc
    rows = evaluation_rows(features, forgotten, cfg)
    return mia(outputs_from_features(model, features, *rows), forgotten, cfg.mia_sample, cfg.seed).efficacy


def _caps_case(evidence: str, model: SplitModel, features: FeatureSet, forgotten: tuple[int, ...],
               caps: tuple[int, ...], seeds: tuple[int, ...], cfg: EvaluationConfig, labels: dict) -> list[dict]:
    key = "mia_sample" if evidence == "mia" else "probe_sample"
    rows, uncapped_by_seed = [], {}
    for seed in seeds:
        uncapped_cfg = replace(cfg, **{key: 0, "retain_sample": 0, "seed": seed})
        if evidence == "probe" and uncapped_by_seed:  # every row, no sampling: the same for every seed
            uncapped_by_seed[seed] = next(iter(uncapped_by_seed.values()))
        else:
            timed = _timed(_evidence, evidence, model, features, forgotten, uncapped_cfg)
            uncapped_by_seed[seed] = (timed.result, timed.seconds)
        uncapped, uncapped_s = uncapped_by_seed[seed]
        progress(f"[{evidence} caps] seed {seed}: uncapped {uncapped:.2f} in {uncapped_s:.1f} s")
        for cap in caps:
            timed = _timed(_evidence, evidence, model, features, forgotten, replace(cfg, **{key: cap, "seed": seed}))
            rows.append({**labels, "cap": cap, "seed": seed, "value": round(timed.result, 4),
                         "uncapped": round(uncapped, 4), "seconds": timed.seconds, "uncapped_seconds": uncapped_s})
    return rows


def run_mia_grid(sizes: tuple[int, ...] = (5_000, 50_000), dim: int = DIM,
                 class_counts: tuple[int, ...] = CLASS_COUNTS, seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
                 params: Params | None = None) -> dict:
    """The MIA as shipped (``lau.metrics.fit_mia_svc``: confidences rounded to ``MIA_GRID``, each
    distinct one fitted once with its count as weight) against libsvm fitted on every confidence,
    on the same members, non-members and targets (the shipped ``mia_sample`` cap), per seed, on the
    parent, midway and candidate heads of each synthetic case; the fit's seconds of each."""
    params = params or Params()
    rows = []
    for num_classes in class_counts:
        for size in sorted(sizes):
            synthetic = make_synthetic(size, dim, num_classes)
            rows += _grid_case(params, synthetic.parent, synthetic.features, seeds,
                               {"num_classes": num_classes, "train_rows": size})
            del synthetic
            gc.collect()
    return _grid_result(rows, params, seeds, dim=dim)


def run_mia_grid_data(datasets: tuple[str, ...] = ("mnist5k", "digits", "synth_shapes", "synth_glyphs"),
                      seeds: tuple[int, ...] = (0, 1, 2, 3, 4), params: Params | None = None) -> dict:
    """``run_mia_grid`` on real features: per dataset, the default model trained with params.yaml
    (only the dataset changed), its cached features, LAU on class 3."""
    from lau.pipeline import featurize, prepare_data, resolve_params, train_original

    params = params or Params()
    rows = []
    for dataset in datasets:
        case = resolve_params(params.replace("data", dataset=dataset))
        split = prepare_data(case)
        progress(f"[mia grid] {dataset}: training the original")
        parent = train_original(case, split)
        features = featurize(case, parent, split, f"mia-grid-{dataset}")
        rows += _grid_case(case, parent, features, seeds,
                           {"dataset": dataset, "num_classes": parent.spec.num_classes,
                            "train_rows": len(features.train_labels)})
    return _grid_result(rows, params, seeds, dim=None)


def _grid_case(params: Params, parent: SplitModel, features: FeatureSet, seeds: tuple[int, ...],
               labels: dict) -> list[dict]:
    from lau.metrics import fit_mia_svc, mia_sets, mia_svc, svc_predict

    unlearned = unlearn_classes(params, parent, features, FORGET_CLASSES)
    models = {"parent": parent, "midway": _midway(parent, unlearned.candidate), "candidate": unlearned.candidate}
    rows = []
    for name, model in models.items():
        progress(f"[mia grid] {labels}, {name}")
        for seed in seeds:
            cfg = replace(params.evaluation, seed=seed)
            outputs = outputs_from_features(model, features, *evaluation_rows(features, unlearned.forgotten, cfg))
            members, non_members, targets = mia_sets(outputs, unlearned.forgotten, cfg.mia_sample, cfg.seed)
            x = np.concatenate([members, non_members])[:, 0]
            y = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
            start = time.perf_counter()
            merged = fit_mia_svc(x, y)
            merged_s = time.perf_counter() - start
            start = time.perf_counter()
            every = mia_svc().fit(x[:, None], y)
            every_s = time.perf_counter() - start
            rows.append({**labels, "model": name, "seed": seed, "points": len(x),
                         "distinct_points": int(merged.shape_fit_[0]),
                         "efficacy": 100.0 * float((svc_predict(merged, targets) == 0).mean()),
                         "efficacy_every_point": 100.0 * float((svc_predict(every, targets) == 0).mean()),
                         "fit_s": round(merged_s, 4), "fit_every_point_s": round(every_s, 4)})
    return rows


def _grid_result(rows: list[dict], params: Params, seeds: tuple[int, ...], dim: int | None) -> dict:
    from lau.metrics import MIA_GRID

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row.get("dataset", "synthetic"), row["num_classes"], row["train_rows"], row["model"]),
                          []).append(row)
    summary = [{"dataset": dataset, "num_classes": k, "train_rows": n, "model": model,
                "efficacy_every_point": [r["efficacy_every_point"] for r in group],
                "efficacy": [r["efficacy"] for r in group],
                "worst_gap": round(max(abs(r["efficacy"] - r["efficacy_every_point"]) for r in group), 4),
                "points": round(sum(r["points"] for r in group) / len(group)),
                "distinct_points": round(sum(r["distinct_points"] for r in group) / len(group)),
                "fit_every_point_s": round(sum(r["fit_every_point_s"] for r in group) / len(group), 4),
                "fit_s": round(sum(r["fit_s"] for r in group) / len(group), 4)}
               for (dataset, k, n, model), group in groups.items()]
    return {"synthetic": dim is not None, "evidence": "mia grid", "dim": dim, "grid": MIA_GRID,
            "mia_sample": params.evaluation.mia_sample, "seeds": list(seeds),
            "load_average": list(os.getloadavg()), "rows": rows, "summary": summary}


def summarize_caps(rows: list[dict]) -> list[dict]:
    """Per (classes, size, model, cap): spread over seeds and the worst gap to the uncapped value."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["num_classes"], row["train_rows"], row["model"], row["cap"]), []).append(row)
    summary = []
    for (num_classes, size, model, cap), group in groups.items():
        values = torch.tensor([r["value"] for r in group], dtype=torch.float64)
        uncapped = torch.tensor([r["uncapped"] for r in group], dtype=torch.float64)
        summary.append({"num_classes": num_classes, "train_rows": size, "model": model, "cap": cap,
                        "mean": round(float(values.mean()), 2), "min": round(float(values.min()), 2),
                        "max": round(float(values.max()), 2),
                        "uncapped_mean": round(float(uncapped.mean()), 2),
                        "uncapped_min": round(float(uncapped.min()), 2), "uncapped_max": round(float(uncapped.max()), 2),
                        "worst_gap": round(float((values - uncapped).abs().max()), 2),
                        "seconds": round(sum(r["seconds"] for r in group) / len(group), 3),
                        "uncapped_seconds": round(sum(r["uncapped_seconds"] for r in group) / len(group), 3)})
    return summary
