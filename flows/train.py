"""The train flow: prepare the data (forgotten classes excluded), train, cache the features,
evaluate, register the original model and make it the champion."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from flows.lock import model_lock
from tasks.common import Context
from tasks.data import prepare, publish
from tasks.features import cached_features, retire
from tasks.ledger import json_safe
from tasks.model import evaluate_original, train
from tasks.publish import promote, register
from tasks.registry import code_commit
from tasks.reports import plots


@flow(name="train", flow_run_name="train {model_name}")
def train_flow(model_name: str | None = None, dataset: str | None = None, arch: str | None = None,
               epochs: int | None = None, params_path: str | None = None) -> dict[str, Any]:
    """Train the original model on params.yaml's data and register it as the champion."""
    start = time.perf_counter()
    ctx = Context.load(model_name, params_path)
    params = ctx.params
    if dataset:
        params = params.replace("data", dataset=dataset)
    if arch:
        params = params.replace("model", arch=arch)
    if epochs is not None:
        params = params.replace("train", epochs=epochs)
    ctx = Context(params, ctx.settings, ctx.model_name)
    work = ctx.settings.work_dir
    with model_lock(ctx.model_name):
        split, path = prepare(params, work)
        data_version, data_uri = publish(ctx, path)
        model = train(params, split)
        depth = params.unlearn.depth
        cached = cached_features(ctx, model, depth, data_version)
        evaluation = evaluate_original(model, cached.features)
        evaluation = {**evaluation, "before": evaluation, "after": evaluation}
        plots_dir = plots(evaluation, list(split.class_names), list(split.excluded_classes),
                          work / "plots" / f"train-{data_version[:8]}")
        tags = {"parent_version": "", "forgotten_classes": [], "request_ids": "", "method": "train",
                "depth": depth, "num_classes": split.num_classes, "dataset": params.data.dataset, "arch": params.model.arch,
                "data_version": data_version, "data_uri": data_uri,
                "excluded_classes": list(split.excluded_classes), "feature_cache_key": cached.features.key,
                "feature_cache_sha256": cached.sha256, "gate": "passed", "code_commit": code_commit(),
                "test_retain_acc": evaluation["metrics"]["test_acc"]}
        sizes = {"train_images": len(split.train_labels), "test_images": len(split.test_labels)}
        version = register(ctx, model, run_name=f"train {params.data.dataset}/{params.model.arch}", tags=tags,
                           metrics=evaluation["metrics"],
                           evaluation=json_safe({k: v for k, v in evaluation.items() if k not in ("before", "after")}),
                           plots_dir=plots_dir, depth=depth,
                           data={"name": params.data.dataset, "version": data_version, "uri": data_uri,
                                 "sizes": sizes})
        promote(ctx, version)
        retire(ctx, data_version)
    return json_safe({"model": ctx.model_name, "version": version.version, "status": "registered",
                      "dataset": params.data.dataset, "arch": params.model.arch, "data_version": data_version,
                      "excluded_classes": list(split.excluded_classes), **sizes,
                      "metrics": evaluation["metrics"],
                      "timings": {"features_s": round(cached.seconds, 3),
                                  "total_s": round(time.perf_counter() - start, 3)}})
