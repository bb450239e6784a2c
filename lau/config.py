"""One typed, frozen configuration loaded from params.yaml.

Unknown keys and wrong types are errors that name the key (nanoGPT's strict overrides).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lau.errors import BadInput


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist5k"
    root: str = ""
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    max_per_class: int = 0
    image_size: int = 0
    excluded_classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.test_fraction + self.val_fraction >= 1:
            raise BadInput(f"'data.test_fraction' + 'data.val_fraction' must leave images to train on, got "
                           f"{self.test_fraction} + {self.val_fraction}")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "cnn"
    small_stem: bool = True
    # An adopted model (arch torchvision:<builder> | timm:<name>): the team's weights and how to read them
    weights: str = ""
    head: str = ""
    weights_meta: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 0.002
    schedule: str = "cosine"
    warmup_epochs: int = 1
    weight_decay: float = 0.0005
    augment: str = "none"
    label_smoothing: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class FeaturesConfig:
    batch_size: int = 512


@dataclass(frozen=True)
class UnlearnConfig:
    forget_classes: tuple[int, ...] = (3,)
    method: str = "lau"
    depth: int = 1
    eps: float = 2.0
    step: float = 0.5
    pgd_steps: int = 5
    temperature: float = 4.0
    alpha: float = 0.5
    optimizer: str = "sgd"
    lr: float = 0.001
    batch_size: int = 1024
    max_epochs: int = 200
    margin: float = 1.0
    balanced: bool = True
    retain_weight: float = 2.0
    retain_per_class: int = 64
    search: bool = True
    scope: str = "rows"
    val_per_class: int = 500
    hidden_edit: bool = True
    hidden_ridge: float = 0.3
    seed: int = 0


@dataclass(frozen=True)
class BaselinesConfig:
    finetune_epochs: int = 2
    finetune_lr: float = 0.001
    neggrad_lr: float = 0.0001
    random_label_lr: float = 0.0001
    boundary_shrink_lr: float = 0.0001
    boundary_shrink_bound: float = 0.1
    boundary_shrink_steps: int = 5
    max_epochs: int = 10
    batch_size: int = 64


@dataclass(frozen=True)
class GateConfig:
    max_retain_drop: float = 1.0
    max_total_retain_drop: float = 2.0
    min_mia_efficacy: float = 0.0
    min_test_retain_acc: float = 0.0


@dataclass(frozen=True)
class EvaluationConfig:
    """Sample caps of the evidence (0 = every image): what keeps an evaluation's cost flat in |D|."""

    retain_sample: int = 20000
    mia_sample: int = 2000
    probe_sample: int = 50000
    seed: int = 0


@dataclass(frozen=True)
class RegistryConfig:
    model_name: str = "lau-classifier"
    alias: str = "champion"


@dataclass(frozen=True)
class StorageConfig:
    bucket: str = "lau"


@dataclass(frozen=True)
class ScheduleConfig:
    cron: str = "0 2 * * *"
    consolidate_cron: str = "0 3 * * 0"
    timezone: str = "UTC"


@dataclass(frozen=True)
class RunnerConfig:
    kind: str = "local"
    address: str = ""
    n_workers: int = 2
    shard_size: int = 1000


@dataclass(frozen=True)
class SloConfig:
    erasure_deadline_days: float = 30.0
    warning_fraction: float = 0.8


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    slo: SloConfig = field(default_factory=SloConfig)

    def replace(self, section: str, **changes: Any) -> Params:
        """A copy with some keys of one section changed, type-checked like the file."""
        current = dataclasses.asdict(getattr(self, section))
        unknown = set(changes) - set(current)
        if unknown:
            raise BadInput(f"params: unknown key '{section}.{sorted(unknown)[0]}'")
        current.update(changes)
        cls = type(getattr(self, section))
        return dataclasses.replace(self, **{section: _build(cls, current, section)})

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), e.g. for logging as MLflow params."""
        return _plain(dataclasses.asdict(self))


# Which values must be >= 0 / > 0 / inside [0, 1]; checked after types.
_POSITIVE = {"train.epochs", "train.batch_size", "train.lr", "features.batch_size", "unlearn.depth",
             "unlearn.temperature", "unlearn.lr", "unlearn.max_epochs", "unlearn.hidden_ridge", "runner.n_workers",
             "runner.shard_size", "baselines.finetune_epochs", "baselines.finetune_lr",
             "baselines.neggrad_lr", "baselines.random_label_lr", "baselines.boundary_shrink_lr",
             "baselines.boundary_shrink_bound", "baselines.boundary_shrink_steps", "baselines.max_epochs",
             "baselines.batch_size", "slo.erasure_deadline_days"}
_NON_NEGATIVE = {"data.max_per_class", "data.image_size", "train.weight_decay", "train.warmup_epochs",
                 "unlearn.eps", "unlearn.step", "unlearn.pgd_steps", "unlearn.batch_size", "unlearn.margin",
                 "unlearn.retain_weight", "unlearn.retain_batch", "unlearn.retain_per_class",
                 "unlearn.val_per_class", "gate.min_mia_efficacy", "gate.min_test_retain_acc",
                 "evaluation.retain_sample", "evaluation.mia_sample", "evaluation.probe_sample"}
_FINITE_POINTS = {"gate.max_retain_drop", "gate.max_total_retain_drop"}  # -100..100, negative = strict
_UNIT_INTERVAL = {"unlearn.alpha", "slo.warning_fraction", "train.label_smoothing"}
_CHOICES = {"unlearn.optimizer": ("adam", "sgd"), "unlearn.method": ("lau", "lau_paper"),
            "unlearn.scope": ("rows", "full"),
            "train.optimizer": ("adamw", "sgd"), "train.schedule": ("cosine", "constant"),
            "train.augment": ("none", "shift", "shift_flip"), "runner.kind": ("local", "dask")}
_OPEN_UNIT_INTERVAL = {"data.test_fraction"}
_HALF_OPEN_UNIT_INTERVAL = {"data.val_fraction"}


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raises BadInput naming the offending key."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise BadInput(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: top level must be a mapping of sections")
    try:
        return _build(Params, raw, "")
    except BadInput as err:
        raise BadInput(f"{path}: {err}") from None


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise BadInput(f"'{prefix}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise BadInput(f"unknown key '{_join(prefix, key)}'")
    values = {}
    for key, value in raw.items():
        name = _join(prefix, key)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value, name)
        else:
            values[key] = _coerce(value, hint, name)
            _check_range(name, values[key])
    return cls(**values)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple and typing.get_args(hint)[0] is float:
        if not isinstance(value, (list, tuple)):
            raise BadInput(f"'{name}' must be a list of numbers, got {value!r}")
        return tuple(_coerce(v, float, name) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BadInput(f"'{name}' must be a list of integers, got {value!r}")
        items = tuple(_coerce(v, int, name) for v in value)
        if len(set(items)) != len(items):
            raise BadInput(f"'{name}' lists a class twice: {list(items)}")
        if any(v < 0 for v in items):
            raise BadInput(f"'{name}' must hold non-negative class ids, got {list(items)}")
        return items
    if hint is bool:
        if not isinstance(value, bool):
            raise BadInput(f"'{name}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"'{name}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"'{name}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise BadInput(f"'{name}' must be a string, got {value!r}")
        return value
    if isinstance(hint, types.UnionType):  # pragma: no cover - no unions today
        raise BadInput(f"'{name}': unsupported type")
    raise BadInput(f"'{name}': unsupported type {hint}")


def _check_range(name: str, value: Any) -> None:
    if name in _POSITIVE and value <= 0:
        raise BadInput(f"'{name}' must be > 0, got {value}")
    if name in _NON_NEGATIVE and value < 0:
        raise BadInput(f"'{name}' must be >= 0, got {value}")
    if name in _UNIT_INTERVAL and not 0 <= value <= 1:
        raise BadInput(f"'{name}' must be between 0 and 1, got {value}")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise BadInput(f"'{name}' must be one of {', '.join(_CHOICES[name])}, got {value!r}")
    if name in _FINITE_POINTS and not -100 <= value <= 100:  # also refuses NaN and inf
        raise BadInput(f"'{name}' must be a number of points between -100 and 100, got {value}")
    if name in _OPEN_UNIT_INTERVAL and not 0 < value < 1:
        raise BadInput(f"'{name}' must be strictly between 0 and 1, got {value}")
    if name in _HALF_OPEN_UNIT_INTERVAL and not 0 <= value < 1:
        raise BadInput(f"'{name}' must be at least 0 and below 1, got {value}")


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
