"""What an evaluation computes once and reads afterwards, stored beside the features it was made on.

- The probe record of a lineage (``lau.probe``): at depth 1 every model of a lineage reads the
  same features, so one linear probe, fitted when the features are cached, answers every later
  deletion (``features/<key>/probe-<probe key>.json``).
- The parent's side of a deletion's evaluation (``lau.evaluation.evaluate_parent``), keyed by the
  parent's weights, the features, the erased set and the settings
  (``features/<key>/parent-<key>.json``): a retried or redone deletion does not score the parent
  again.
Local copies live under ``$LAU_WORK_DIR/features/<key>/``. A copy that does not parse, or does not
match the features and settings it claims, is a miss (computed again, overwritten).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prefect import task

from lau.config import EvaluationConfig
from lau.evaluation import ModelEvaluation, check_parent_side, evaluate_parent, parent_side_key
from lau.features import FeatureSet
from lau.models import SplitModel
from lau.probe import ProbeRecord, check_probe, probe_record, probe_record_key
from lau.utils import progress
from tasks.context import Context
from tasks.policy import IO

T = TypeVar("T")


def _cached(ctx: Context, features_key: str, name: str, parse: Callable[[dict], T],
            check: Callable[[T], None], compute: Callable[[], T], dump: Callable[[T], dict]) -> T:
    """Local copy, else S3 copy, else ``compute()`` and store both; ``check`` refuses a wrong copy."""
    local = ctx.settings.feature_dir / features_key / name
    s3_key = f"features/{features_key}/{name}"
    for read in (lambda: json.loads(local.read_text()) if local.is_file() else None,
                 lambda: ctx.storage.get_json(s3_key)):
        try:
            data = read()
            if data is not None:
                value = parse(data)
                check(value)
                _write_local(local, data)
                return value
        except (ValueError, KeyError, TypeError) as err:
            progress(f"[evaluation cache] {name} of {features_key} is unusable ({err}): computing it again")
    value = compute()
    data = dump(value)
    _write_local(local, data)
    ctx.storage.put_json(s3_key, data)
    return value


def _write_local(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


@task(name="probe record (cache or fit)", **IO)
def cached_probe(ctx: Context, model: SplitModel, features: FeatureSet, cfg: EvaluationConfig) -> ProbeRecord | None:
    """The lineage's probe record at depth 1 (None at deeper splits: each candidate has its own)."""
    if features.depth != 1:
        return None
    return _cached(ctx, features.key, f"probe-{probe_record_key(features.key, cfg)}.json", ProbeRecord.from_json,
                   lambda record: check_probe(record, features, cfg),
                   lambda: probe_record(model, features, cfg), lambda record: record.to_json())


@task(name="parent's side of the evaluation (cache or compute)", **IO)
def cached_parent_side(ctx: Context, parent: SplitModel, parent_sha256: str, features: FeatureSet,
                       forgotten: tuple[int, ...], cfg: EvaluationConfig,
                       probe: ProbeRecord | None) -> ModelEvaluation:
    key = parent_side_key(parent_sha256, features.key, forgotten, cfg)
    return _cached(ctx, features.key, f"parent-{key}.json", ModelEvaluation.from_json,
                   lambda side: check_parent_side(side, features, forgotten, cfg),
                   lambda: evaluate_parent(parent, features, forgotten, cfg, probe=probe),
                   lambda side: side.to_json())
