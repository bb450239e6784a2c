"""The flows that make a new lineage root, each through the same gate as a deletion:

- `train`: prepare the data without any class the model has erased (the erasure record is read,
  not params.yaml), train, cache the features, gate, register, promote.
- `consolidate` (weekly): the same retrain on the cleaned data, replacing the champion's LAU
  lineage, so the features forget the erased classes too; its report shows the linear-probe
  residual of the erased classes before (the LAU champion) and after (the retrain). A team's
  adopted model is refused: retraining it is the team's job (`lau adopt --replace`, flows/adopt.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import flow

from flows.lineage import check_champion, lineage_metrics, root_accuracy
from flows.lock import model_lock
from lau.adopt import retrain_hint
from lau.config import Params
from lau.data import Split
from lau.evaluation import Evaluation
from lau.models import SplitModel
from lau.utils import json_safe, progress
from lau.zoo import is_adopted_arch
from tasks.context import Context
from tasks.data import cleaned, prepare_data, upload_data
from tasks.engine import evaluate_trained, gate_trained, train_model
from tasks.evaluation_cache import cached_probe
from tasks.evidence import Evidence
from tasks.features import cached_features, retire
from tasks.registry import Version, code_commit
from tasks.reports import audit_report, plots, root_report
from tasks.requests import erased_classes
from tasks.tags import VersionTags
from tasks.versions import DataInput, promote, read_champion, read_evidence, register, tag


@flow(name="train", flow_run_name="train {model_name}")
def train_flow(model_name: str | None = None, dataset: str | None = None, arch: str | None = None,
               epochs: int | None = None, params_path: str | None = None) -> dict[str, Any]:
    """Train a model on params.yaml's data minus every erased class; register it as the champion
    if the gate passes."""
    ctx = Context.load(model_name, params_path)
    params = ctx.params
    if dataset:
        params = params.replace("data", dataset=dataset)
    if arch:
        params = params.replace("model", arch=arch)
    if epochs is not None:
        params = params.replace("train", epochs=epochs)
    ctx = Context(params, ctx.settings, ctx.model_name)
    with model_lock(ctx.model_name):
        return make_root(ctx, "train")


@flow(name="consolidate", flow_run_name="consolidate {model_name}")
def consolidate(model_name: str | None = None, params_path: str | None = None) -> dict[str, Any]:
    """Retrain the champion's model on the cleaned data and make it the new lineage root."""
    ctx = Context.load(model_name, params_path)
    with model_lock(ctx.model_name):
        champion = ctx.registry.require_champion()
        if is_adopted_arch(champion.tag("arch")):  # the weekly run completes, saying how the team's retrain plugs in
            hint = retrain_hint(ctx.model_name, champion.tag("arch"))
            progress(f"[consolidate] skipped: {hint}")
            return {"model": ctx.model_name, "status": "skipped", "version": None, "error": hint}
        check_champion(ctx, champion)
        return make_root(ctx, "consolidate", replacing=champion)


def served_classes(split: Split) -> tuple[int, ...]:
    """The classes a model made from ``split`` serves: every class its data did not leave out."""
    return tuple(c for c in range(split.num_classes) if c not in split.excluded_classes)


def make_root(ctx: Context, method: str, replacing: Version | None = None,
              make_model: Callable[[Params, Split], SplitModel] = train_model,
              adopted_from: str = "") -> dict[str, Any]:
    """Prepare, make the model (train it, or adopt the team's), cache features, evaluate (erased
    classes on their own images), gate, and register + promote only if the gate passes."""
    start = time.perf_counter()
    erased = erased_classes(ctx)
    params = cleaned(ctx.params, erased)
    split, path = prepare_data(params, ctx.settings.work_dir)
    model = make_model(params, split)  # before anything is uploaded: a model that does not fit the data stops here
    data_version, data_uri = upload_data(ctx, path)
    cached = cached_features(ctx, model, params.unlearn.depth, data_version)
    cached_probe(ctx, model, cached.features, params.evaluation)  # fitted once: every deletion reads it
    evaluation, erased_metrics = evaluate_trained(params, model, cached.features, erased)
    current = replacing or read_champion(ctx)
    test_retain_acc = evaluation.metrics["test_acc"]
    metrics = {**evaluation.metrics, "test_retain_acc": test_retain_acc, **erased_metrics,
               **lineage_metrics(root_accuracy(ctx, current, served_classes(split)), test_retain_acc)}
    verdict = gate_trained(metrics, params.gate, erased)
    evidence = Evidence(Evaluation(metrics, evaluation, evaluation, 0.0), verdict, metrics, erased, "",
                        tuple(split.class_names), cached.features.key, cached.sha256,
                        {"features_s": round(cached.seconds, 3), "total_s": round(time.perf_counter() - start, 3)})
    plots_dir = plots(evidence.evaluation, list(split.class_names), list(erased),
                      ctx.settings.work_dir / "plots" / f"{method}-{data_version[:8]}")
    summary = {"model": ctx.model_name, "status": "rejected", "version": None, "method": method,
               "dataset": params.data.dataset, "arch": params.model.arch, "data_version": data_version,
               "erased_classes": list(erased), "excluded_classes": list(split.excluded_classes),
               "train_images": len(split.train_labels), "test_images": len(split.test_labels),
               "gate": verdict.to_json(), "metrics": metrics, "timings": evidence.timings}
    if not verdict.passed:
        return json_safe({**summary, "error": f"gate failed: {verdict.reason()}"})
    tags = VersionTags(
        method=method, verdict=verdict, dataset=params.data.dataset, arch=params.model.arch,
        num_classes=split.num_classes, depth=params.unlearn.depth, data_version=data_version, data_uri=data_uri,
        feature_cache_key=cached.features.key, feature_cache_sha256=cached.sha256,
        test_retain_acc=test_retain_acc, code_commit=code_commit(), forgotten_classes=erased,
        excluded_classes=tuple(split.excluded_classes),
        consolidated_from=replacing.version if replacing else "", adopted_from=adopted_from)
    data = DataInput(params.data.dataset, data_version, data_uri,
                     {"train_images": len(split.train_labels), "test_images": len(split.test_labels)})
    version = register(ctx, model, tags, run_name=f"{method} {params.data.dataset}/{params.model.arch}",
                       metrics=metrics, evidence=evidence.to_json(), plots_dir=plots_dir, data=data)
    promote(ctx, version)
    retire(ctx, data_version)
    if replacing is not None:
        before = Evidence.from_json(read_evidence(ctx, replacing)).metrics if replacing.tag("parent_version") else {}
        summary["report_uri"] = audit_report(ctx, root_report(ctx, version, replacing, evidence, before), plots_dir)
        tag(ctx, version, "report_uri", summary["report_uri"])
    return json_safe({**summary, "status": "registered", "version": version.version})
