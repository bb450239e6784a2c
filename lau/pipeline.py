"""The pipeline's stages as pure functions, shared by `dvc repro` (lau.stages) and the Prefect tasks.

prepare -> train -> featurize -> unlearn -> evaluate; both front ends call these, so a flow's
registered numbers and a `dvc repro` of the same params and data are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from lau.config import Params
from lau.data import Split, check_classes, prepare
from lau.errors import BadInput

# Re-exported: the stages and the Prefect tasks reach the evaluation through this module.
from lau.evaluation import evaluate_candidate as evaluate_candidate
from lau.evaluation import train_metrics as train_metrics
from lau.features import FeatureSet, extract_features
from lau.models import SplitModel
from lau.train import fit, new_model
from lau.unlearn import LAUResult, unlearn


def prepare_data(params: Params) -> Split:
    """Bundled or on-disk dataset -> the stratified split, honouring ``data.excluded_classes``."""
    return prepare(params.data)


def train_original(params: Params, split: Split) -> SplitModel:
    """The original model, trained on every image of the split (seeded)."""
    model = new_model(split, params.model, params.train.seed)
    return fit(model, split.train_images, split.train_labels, params.train, label="train")


def featurize(params: Params, model: SplitModel, split: Split, data_version: str, *,
              depth: int | None = None) -> FeatureSet:
    """F_f features of every image at ``depth`` (default ``unlearn.depth``)."""
    return extract_features(model, split, depth or params.unlearn.depth, data_version,
                            params.features.batch_size)


@dataclass(frozen=True)
class Unlearned:
    """A candidate and how it was made."""

    candidate: SplitModel
    result: LAUResult
    forget_classes: tuple[int, ...]  # this request's classes
    forgotten: tuple[int, ...]  # cumulative over the lineage, this request's included


def unlearn_classes(params: Params, parent: SplitModel, features: FeatureSet,
                    forget_classes: tuple[int, ...], already_forgotten: tuple[int, ...] = (),
                    excluded: tuple[int, ...] = ()) -> Unlearned:
    """LAU on the parent's head for ``forget_classes``; classes forgotten earlier in the lineage stay
    in D_f (protected from coming back) and are never attack targets."""
    forget_classes = check_classes(forget_classes, parent.spec.num_classes, what="forget classes",
                                   excluded=excluded)
    repeated = set(forget_classes) & set(already_forgotten)
    if repeated:
        raise BadInput(f"forget classes: {sorted(repeated)} already forgotten in this lineage")
    missing = [c for c in forget_classes
               if not (features.train_labels == c).any() or not (features.test_labels == c).any()]
    if missing:
        raise BadInput(f"forget classes: {missing} have no train or no test images in this lineage's data, "
                       "so their erasure cannot be verified")
    forgotten = tuple(sorted(set(forget_classes) | set(already_forgotten)))
    check_classes(forgotten, parent.spec.num_classes, what="forget classes (with the lineage's)",
                  excluded=excluded)
    # D_f is cumulative: samples of classes forgotten earlier are already unlearned, so the mask
    # leaves them alone, unless this update would bring one back within the margin.
    # Classes erased before this lineage was trained (excluded from its data) are blocked too: a
    # forgotten sample must land on a class that is still served.
    blocked = tuple(sorted(set(forgotten) | set(excluded)))
    candidate, result = unlearn(parent, features, forgotten, params.unlearn, blocked_classes=blocked)
    return Unlearned(candidate, result, forget_classes, forgotten)
