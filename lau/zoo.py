"""torchvision and timm as libraries: build an architecture by name, find its classification module,
read the preprocessing its weights were made with. Nothing is downloaded here: every network is
created without pretrained weights (the team's own weights are loaded afterwards).

An architecture is named ``torchvision:<builder>`` (``torchvision:resnet18``) or ``timm:<name>``
(``timm:convnext_atto``, ``timm:resnet18.a1_in1k``).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass

from torch import nn
from torch.nn import init
from torch.overrides import TorchFunctionMode

from lau.errors import BadInput

TORCHVISION, TIMM = "torchvision", "timm"
LIBRARIES = (TORCHVISION, TIMM)
# Where torchvision keeps the classification layer, in the order they are tried: a Linear of that
# name, or the last child of a Sequential of that name (VGG's classifier.6, ViT's heads.head).
HEAD_NAMES = ("fc", "head", "heads", "classifier")
# The keyword each library's models take for their input size (ViT, Swin, MaxViT need it).
SIZE_KWARGS = {TORCHVISION: ("image_size", "input_size"), TIMM: ("img_size",)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How the team's images reach the network: square side, per-channel mean and std in [0, 1]."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # where the values came from, e.g. "timm pretrained_cfg of resnet18" or "flags"


def is_adopted_arch(arch: str) -> bool:
    """True for ``torchvision:...`` and ``timm:...`` names (the engine's own archs have no colon)."""
    return arch.split(":", 1)[0] in LIBRARIES and ":" in arch


def parse_arch(arch: str) -> tuple[str, str]:
    """``torchvision:resnet18`` -> ("torchvision", "resnet18"); unknown builders name close ones."""
    library, _, name = arch.partition(":")
    if library not in LIBRARIES or not name:
        raise BadInput(f"arch '{arch}': name it torchvision:<builder> (e.g. torchvision:resnet18) "
                       "or timm:<model> (e.g. timm:convnext_atto)")
    known = _model_names(library)
    if _base_name(library, name) not in known:
        close = difflib.get_close_matches(_base_name(library, name), known, n=4)
        hint = f"; did you mean {', '.join(f'{library}:{c}' for c in close)}?" if close else ""
        raise BadInput(f"arch '{arch}': {library} has no model '{name}'{hint}")
    return library, name


def build_net(library: str, name: str, num_classes: int, image_size: int,
              builder_kwargs: dict | None = None) -> tuple[nn.Module, dict]:
    """The architecture with ``num_classes`` outputs, its parameters NOT initialised: load a state
    dict into it next (strictly, so that every tensor is overwritten). No download.

    Without ``builder_kwargs`` the input size is passed to models that name it (ViT, Swin, MaxViT:
    their position tables depend on it); returns (network, the keyword arguments used), which
    rebuild the same network later.
    """
    if builder_kwargs is not None:
        return _create(library, name, num_classes, builder_kwargs), dict(builder_kwargs)
    for key in SIZE_KWARGS[library]:
        try:
            net = _create(library, name, num_classes, {key: image_size})
        except TypeError as err:
            if key not in str(err):
                raise
            continue
        # a model that swallows **kwargs ignored it: do not record it
        named = inspect.signature(type(net).__init__).parameters
        return net, ({key: image_size} if key in named else {})
    return _create(library, name, num_classes, {}), {}


def _create(library: str, name: str, num_classes: int, kwargs: dict) -> nn.Module:
    """One network; a TypeError (an argument the model does not take) is left to the caller."""
    try:
        with _SkipInit():
            if library == TIMM:
                import timm

                return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
            import torchvision.models as tvm

            return tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except (ValueError, AssertionError, RuntimeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise BadInput(f"{library}:{name} cannot be built with {kwargs or 'its defaults'} ({reason})") from None


# Whole init functions that PyTorch dispatches to a function mode (nn.Linear and nn.Conv's
# reset_parameters, VGG's and others' explicit inits). Tensor-level fills (Tensor.normal_) are NOT
# skipped: trunc_normal_ resamples until its values fall in range, and a skipped fill would loop forever.
_SKIPPED_INITS = {init.uniform_, init.normal_, init.kaiming_uniform_}


class _SkipInit(TorchFunctionMode):
    """Skips the bulk of weight initialisation, for this thread only (a function mode is
    thread-local): every tensor it would fill is overwritten by the team's weights next."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        if func in _SKIPPED_INITS:
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))


def find_head(net: nn.Module, library: str, head: str = "") -> str:
    """The qualified name of the classification module: ``head`` if given (it must exist), timm's
    ``get_classifier()``, or torchvision's by the usual names (``fc``, ``classifier.N``, ...)."""
    modules = dict(net.named_modules())
    if head and head not in modules:
        raise BadInput(f"head module '{head}' does not exist in {type(net).__name__}; "
                       f"candidates: {', '.join(head_candidates(net))}")
    if library == TIMM:
        classifier = next((n for n, m in modules.items() if n and m is net.get_classifier()), "")
        if head and head != classifier:
            raise BadInput(f"timm models split at their own classifier ('{classifier}'), not at '{head}'")
        if classifier:
            return classifier
    if head:
        return head
    for name in HEAD_NAMES:
        module = modules.get(name)
        if isinstance(module, nn.Linear):
            return name
        if isinstance(module, nn.Sequential) and len(module):
            last_name, last = list(module.named_children())[-1]
            if isinstance(last, nn.Linear):
                return f"{name}.{last_name}"
    raise BadInput(f"no classification module found in {type(net).__name__}: name it as the head; "
                   f"candidates: {', '.join(head_candidates(net))}")


def head_candidates(net: nn.Module, count: int = 5) -> list[str]:
    """The last ``count`` Linear (or, lacking any, Conv2d) modules: where a classifier usually is."""
    linears = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    names = linears or [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    return names[-count:] or [n for n, _ in net.named_children()]


def head_groups(net: nn.Module, head: str) -> list[list[str]]:
    """F_c's blocks, the classification module last: one block per depth, as lists of module names.

    Depth 1 is always the head. Deeper splits exist where the head is a child of an nn.Sequential
    that holds hidden Linear layers before it (VGG, AlexNet, MobileNetV3, MaxViT, a ViT with a
    representation layer): each block starts at one of those Linear layers.
    """
    parent_name, _, child = head.rpartition(".")
    parent = dict(net.named_modules()).get(parent_name) if parent_name else None
    groups = [[head]]
    if not isinstance(parent, nn.Sequential):
        return groups
    names = [name for name, _ in parent.named_children()]
    end = names.index(child)
    starts = [i for i in range(end) if isinstance(parent[i], nn.Linear)]
    for start in reversed(starts):
        groups.insert(0, [f"{parent_name}.{n}" for n in names[start:end]])
        end = start
    return groups


def metadata_preprocessing(library: str, name: str, weights_meta: str = "") -> Preprocessing:
    """Preprocessing recorded with the architecture's weights: timm's ``pretrained_cfg`` of the named
    model, or the transforms of a torchvision weights enum (``ResNet18_Weights.IMAGENET1K_V1``;
    by default the builder's DEFAULT weights). Metadata only: no weights are fetched."""
    if library == TIMM:
        import timm.models

        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
        if cfg is None:
            return Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD, f"ImageNet defaults ({name} has no pretrained_cfg)")
        return Preprocessing(int(cfg.input_size[-1]), tuple(cfg.mean), tuple(cfg.std),
                             f"timm pretrained_cfg of {name}")
    import torchvision.models as tvm

    if weights_meta:
        try:
            weights = tvm.get_weight(weights_meta)
        except (ValueError, KeyError, AttributeError):
            raise BadInput(f"unknown torchvision weights '{weights_meta}' "
                           "(e.g. ResNet18_Weights.IMAGENET1K_V1)") from None
    else:
        enum = tvm.get_model_weights(name)
        weights = getattr(enum, "DEFAULT", None) or next(iter(enum), None)
        if weights is None:
            return Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD, "ImageNet defaults")
    transforms = weights.transforms()
    size = getattr(transforms, "crop_size", [224])
    return Preprocessing(int(size[0]), tuple(transforms.mean), tuple(transforms.std),
                         f"torchvision {type(weights).__name__}.{weights.name}")


def resolve_preprocessing(library: str, name: str, *, image_size: int = 0, mean: tuple[float, ...] = (),
                          std: tuple[float, ...] = (), weights_meta: str = "") -> Preprocessing:
    """Flags where given, the weights' metadata for the rest."""
    meta = metadata_preprocessing(library, name, weights_meta)
    if mean and std and len(mean) != len(std):
        raise BadInput(f"mean has {len(mean)} values but std has {len(std)}")
    if any(s <= 0 for s in std):
        raise BadInput(f"std must be > 0, got {list(std)}")
    if image_size < 0:
        raise BadInput(f"image size must be > 0, got {image_size}")
    flags = [k for k, v in (("image_size", image_size), ("mean", mean), ("std", std)) if v]
    source = meta.source if not flags else (
        "flags" if len(flags) == 3 else f"flags ({', '.join(flags)}) + {meta.source}")
    return Preprocessing(image_size or meta.image_size, tuple(float(v) for v in (mean or meta.mean)),
                         tuple(float(v) for v in (std or meta.std)), source)


def _base_name(library: str, name: str) -> str:
    return name.split(".", 1)[0] if library == TIMM else name


def _model_names(library: str) -> list[str]:
    if library == TIMM:
        import timm

        return timm.list_models()
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)
