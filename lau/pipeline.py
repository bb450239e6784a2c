"""The pipeline's stages as pure functions, shared by `dvc repro` (lau.stages) and the Prefect tasks.

prepare -> train -> featurize -> unlearn -> evaluate; both front ends call these, so a flow's
registered numbers and a `dvc repro` of the same params and data are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lau.adopt import adopt, check_data
from lau.config import Params
from lau.data import Split, check_classes, prepare
from lau.errors import BadInput

# Re-exported: the stages and the Prefect tasks reach the evaluation through this module.
from lau.evaluation import evaluate_candidate as evaluate_candidate
from lau.evaluation import train_metrics as train_metrics
from lau.features import FeatureSet, extract_features
from lau.models import SplitModel
from lau.train import Trained, train_model
from lau.unlearn import LAUResult, unlearn
from lau.zoo import is_adopted_arch, parse_arch, resolve_preprocessing


def prepare_data(params: Params) -> Split:
    """Bundled or on-disk dataset -> the stratified split, honouring ``data.excluded_classes``."""
    return prepare(params.data)


def resolve_params(params: Params) -> Params:
    """params as the stages use them: an adopted arch is checked, and its images are prepared at
    the size its preprocessing names when ``data.image_size`` is 0; ``model.weights`` without an
    adopted arch is refused."""
    cfg = params.model
    if not is_adopted_arch(cfg.arch):
        if cfg.weights:
            raise BadInput(f"model.weights is set but model.arch '{cfg.arch}' is one of ours, trained here: "
                           "name the team's architecture torchvision:<builder> or timm:<name>")
        return params
    library, name = parse_arch(cfg.arch)
    if params.data.image_size:
        return params
    pre = resolve_preprocessing(library, name, mean=cfg.mean, std=cfg.std, weights_meta=cfg.weights_meta)
    return params.replace("data", image_size=pre.image_size)


def with_adoption(params: Params, *, arch: str, weights: str, head: str = "", weights_meta: str = "",
                  mean: tuple[float, ...] = (), std: tuple[float, ...] = (), dataset: str | None = None,
                  root: str | None = None, image_size: int | None = None) -> Params:
    """params for adopting a team's model: ``model.*`` say which and how, ``data.*`` the data it was
    trained on (unset ones keep params.yaml's), resolved like the stages' (resolve_params)."""
    if not is_adopted_arch(arch):
        parse_arch(arch)  # the one line that says how to name it
    params = params.replace("model", arch=arch, weights=weights, head=head, weights_meta=weights_meta,
                            mean=tuple(mean), std=tuple(std))
    data = {k: v for k, v in (("dataset", dataset), ("root", root), ("image_size", image_size)) if v is not None}
    return resolve_params(params.replace("data", **data) if data else params)


def train_original(params: Params, split: Split) -> SplitModel:
    """The original model, trained on the split's train images, its best epoch on validation kept."""
    return train_with_report(params, split).model


def train_with_report(params: Params, split: Split) -> Trained:
    """``train_original`` with its report: epochs run, the epoch kept, train/val/test accuracy."""
    if is_adopted_arch(params.model.arch):
        raise BadInput(f"model.arch '{params.model.arch}' is a team's model: `lau adopt` registers it "
                       "(retraining it is the team's job: docs/adopt.md)")
    return train_model(split, params.model, params.train, label="train")


def adopt_original(params: Params, split: Split, weights: str | Path) -> SplitModel:
    """The team's model (``model.*``) with ``weights``, checked against the split: its head has one
    output per class of the data, its first layer takes the images' channels."""
    return adopt_for_data(params, split.class_names, split.in_channels, split.image_size, weights)


def adopt_for_data(params: Params, class_names: tuple[str, ...], in_channels: int, image_size: int,
                   weights: str | Path) -> SplitModel:
    """adopt_original for data known by its class names, channels and image size (lau.data.dataset_classes)."""
    cfg = params.model
    model = adopt(cfg.arch, weights, head=cfg.head, num_classes=len(class_names), class_names=class_names,
                  image_size=image_size, mean=cfg.mean, std=cfg.std, weights_meta=cfg.weights_meta)
    check_data(model, len(class_names), in_channels)
    return model


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
