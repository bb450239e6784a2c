"""The deletion's engine work as one Prefect task run: the champion's cached features, LAU on them,
and the evaluation of the candidate. Each Prefect task run costs the Prefect server ~40 ms of CPU
(its state events and records), which on two cores the deletion waits for; these steps always run
together, so they are one run, their times in the request's timings (docs/results.md)."""

from __future__ import annotations

from prefect import task

from lau.evaluation import Evaluation
from lau.models import SplitModel
from lau.pipeline import Unlearned
from tasks.context import Context
from tasks.engine import evaluate, unlearn
from tasks.evaluation_cache import cached_parent_side, cached_probe
from tasks.features import CachedFeatures, cached_features
from tasks.ledger import Request
from tasks.policy import IO, fault_point
from tasks.registry import Version


@task(name="features, LAU and evaluation", **IO)
def run_engine(ctx: Context, request: Request, champion: Version,
               parent: SplitModel) -> tuple[CachedFeatures, Unlearned, Evaluation]:
    """The champion's cached features, LAU on them, and the evaluation of the candidate: one task
    run, its steps called as plain functions. Each Prefect task run costs the Prefect server ~40 ms
    of CPU (its events and records), which on two cores the deletion waits for; the steps' times are
    in the request's timings (features_s, unlearn_s, evaluate_s). A retry (S3 or MLflow down) runs
    every step again: they are deterministic, and the caches make the second run cheap."""
    cached = cached_features.fn(ctx, parent, ctx.params.unlearn.depth, champion.tag("data_version"),
                                pinned=(champion.tag("feature_cache_key"), champion.tag("feature_cache_sha256")))
    fault_point("features", request.request_id)
    in_data = tuple(c for c in champion.forgotten if c not in champion.excluded)  # D_f of this lineage
    unlearned = unlearn.fn(ctx.params, parent, cached.features, tuple(request.classes), in_data, champion.excluded)
    fault_point("unlearn", request.request_id)
    probe = cached_probe.fn(ctx, parent, cached.features, ctx.params.evaluation)
    parent_side = cached_parent_side.fn(ctx, parent, champion.tag("weights_sha256"), cached.features,
                                        unlearned.forgotten, ctx.params.evaluation, probe)
    evaluation = evaluate.fn(ctx.params, parent, unlearned.candidate, cached.features, unlearned.forgotten,
                             parent_side, probe)
    return cached, unlearned, evaluation
