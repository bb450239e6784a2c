"""Gate-aware LAU: the candidates a deletion tries, and the rule that picks one, on validation data.

A LAU run on cached features costs milliseconds, so a deletion can afford a few. Each candidate is
a documented variation of one LAU run (``CANDIDATES``), tried in order; every candidate must forget
the classes (each train and validation image of them unlearned with ``unlearn.margin``), and among
those that do, the one that loses the least accuracy on the *validation* images of the retained
classes wins. The first candidate that forgets and loses nothing on validation (drop <= 0) ends the
search: nothing the gate checks could be better. Test images are never read here: they judge the
winner in the gate.

The samples LAU reads besides D_f are stratified and capped (``unlearn.retain_per_class``,
``unlearn.val_per_class``), so a deletion's cost depends on |D_f| and the number of classes, not
on the size of the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lau.config import UnlearnConfig
from lau.data import class_mask
from lau.features import FeatureSet

# Tried in this order; on a tie in validation retain drop the earlier one wins. Each entry
# overrides keys of ``unlearn`` (params.yaml) for that run.
#   rows: the update is restricted to the forgotten classes' rows of the classification layer (and
#         their biases): a retained class's logit never moves, so a retained image can only change
#         its prediction if the forgotten class's logit rises on it (impossible at depth 1 on
#         post-ReLU features, where the update lowers that logit along the forget features).
#         A step 10x the full one (SGD lr 0.01) cannot disturb a retained logit and converges in
#         1-2 steps instead of 2-6 (measured on digits and synth_shapes, the same retain drops).
#         No retain term: it would only hold the forgotten logit up on retained images, which
#         protects nothing and, on overlapping classes, costs steps (synthetic 512-d features,
#         73 % accuracy: 63 steps with it, 6 without, the same validation drop).
#   full: every parameter of F_c (the paper's update, ``unlearn.lr``), held by distillation on the
#         retain sample (``unlearn.retain_weight``).
CANDIDATES: dict[str, dict[str, str | float]] = {
    "rows": {"scope": "rows", "lr": 0.01, "retain_weight": 0.0},
    "full": {"scope": "full"},
}


@dataclass(frozen=True)
class CandidateRecord:
    """One candidate's run: did it forget, and what it cost on validation."""

    name: str
    steps: int
    converged: bool
    val_retain_drop: float | None  # points: parent minus candidate on validation retain images
    val_forget_acc: float | None  # % of validation forget images still recognised (argmax)
    seconds: float


def stratified_rows(labels: torch.Tensor, per_class: int, exclude: tuple[int, ...],
                    generator: torch.Generator) -> torch.Tensor:
    """Indices of at most ``per_class`` random rows of every class but ``exclude`` (0 = every row).

    One seeded permutation, then a stable sort by label: each class's block is in random order and
    its first ``per_class`` rows are taken. Sorted indices are returned.
    """
    keep = ~torch.isin(labels, torch.tensor(list(exclude), dtype=labels.dtype))
    rows = torch.nonzero(keep).flatten()
    if per_class <= 0 or len(rows) == 0:
        return rows
    rows = rows[torch.randperm(len(rows), generator=generator)]
    block_labels, order = torch.sort(labels[rows], stable=True)
    rows = rows[order]
    starts = torch.searchsorted(block_labels, block_labels, side="left")
    rank = torch.arange(len(rows)) - starts  # position of each row inside its class's block
    return rows[rank < per_class].sort().values


def retain_drop(parent_logits: torch.Tensor, candidate_logits: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Accuracy points lost on these (retain) rows: parent minus candidate; None for no rows."""
    if len(labels) == 0:
        return None
    parent = (parent_logits.argmax(1) == labels).float().mean().item()
    candidate = (candidate_logits.argmax(1) == labels).float().mean().item()
    return round(100.0 * (parent - candidate), 4)


def accept_at_once(record: CandidateRecord) -> bool:
    """A candidate that forgets and loses no validation retain accuracy ends the search."""
    return record.converged and (record.val_retain_drop is None or record.val_retain_drop <= 0)


def choose(records: list[CandidateRecord]) -> int:
    """Index of the winner: converged first, then the least validation retain drop, then the order
    of ``CANDIDATES``. With no validation rows, the first converged candidate."""
    def key(i: int) -> tuple:
        record = records[i]
        drop = record.val_retain_drop if record.val_retain_drop is not None else 0.0
        return (not record.converged, round(drop, 6), i)

    return min(range(len(records)), key=key)


def feature_scale(train_features: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of the training features (floored), the unit of eps and step."""
    std = train_features.std(dim=0)
    return std.clamp_min(1e-6 if std.numel() == 0 else max(float(std.mean()) * 1e-3, 1e-6))


@dataclass(frozen=True)
class LAUData:
    """What every candidate reads: D_f, the retain sample, the validation sample, the feature scale."""

    forget_features: torch.Tensor  # (F, *shape) D_f: forgotten classes' train (+ validation) rows
    forget_labels: torch.Tensor
    retain_features: torch.Tensor  # (R, *shape) stratified retain sample (distillation, hidden edit)
    retain_labels: torch.Tensor
    val_retain_features: torch.Tensor  # (V, *shape) stratified validation retain sample (the choice)
    val_retain_labels: torch.Tensor
    val_forget_features: torch.Tensor
    val_forget_labels: torch.Tensor
    scale: torch.Tensor  # per-dimension std: the unit of eps and step


def gather(features: FeatureSet, blocked: tuple[int, ...], cfg: UnlearnConfig) -> LAUData:
    """Stratified, capped samples: nothing here grows with the dataset beyond one pass over labels."""
    generator = torch.Generator().manual_seed(cfg.seed)
    train_forget = torch.nonzero(class_mask(features.train_labels, blocked)).flatten()
    retain = stratified_rows(features.train_labels, cfg.retain_per_class, blocked, generator)
    forget_features, forget_labels = features.train_features[train_forget], features.train_labels[train_forget]
    val_forget_features = val_forget_labels = val_retain = None
    if features.has_val:
        val_forget = torch.nonzero(class_mask(features.val_labels, blocked)).flatten()
        val_forget_features, val_forget_labels = features.val_features[val_forget], features.val_labels[val_forget]
        val_retain = stratified_rows(features.val_labels, cfg.val_per_class, blocked, generator)
        if cfg.method == "lau":  # gate-aware: D_f is every image of the classes but the test ones
            forget_features = torch.cat([forget_features, val_forget_features])
            forget_labels = torch.cat([forget_labels, val_forget_labels])
    else:  # no validation split (a cache written without one): judged on the retain sample itself
        val_forget_features, val_forget_labels = forget_features[:0], forget_labels[:0]
    val_source = (features.val_features, features.val_labels, val_retain) if val_retain is not None else \
        (features.train_features, features.train_labels, retain)
    retain_features = features.train_features[retain]
    scale = feature_scale(torch.cat([retain_features, forget_features]))
    return LAUData(forget_features, forget_labels, retain_features, features.train_labels[retain],
                 val_source[0][val_source[2]], val_source[1][val_source[2]], val_forget_features,
                 val_forget_labels, scale)
