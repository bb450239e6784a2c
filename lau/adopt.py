"""Bring your own model: a torchvision or timm classifier the team already serves, under the engine's
model contract (lau.models.SplitModel), its module kept as-is.

    model = adopt("torchvision:resnet18", "weights.pt", num_classes=4, image_size=64)
    model.net            # the team's own nn.Module (same class, same state-dict keys)
    model.state_dict()   # the team's state dict: what checkpoints store, keys unchanged

F_f is everything before the classification module, F_c the module itself (depth 1); deeper splits
where lau.zoo.head_groups finds them. timm models split by timm's own contract
(``forward_features`` then ``forward_head(pre_logits=True)``); torchvision ones at the input of the
head module. The split is checked on a random batch when a model is adopted: F_c(F_f(x)) must equal
the network's own output, so a head that is not the last step is refused.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from lau.errors import BadInput
from lau.models import ModelSpec, Normalize, SplitModel
from lau.zoo import TIMM, build_net, find_head, head_groups, parse_arch, resolve_preprocessing

STATE_DICT_KEYS = ("state_dict", "model_state_dict")  # common wrappers of a training checkpoint
EXPORT_HINT = ("export the weights instead: torch.save(model.state_dict(), 'weights.pt') or "
               "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')")


class _Captured(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a forward pre-hook to stop the network once F_f's output is known."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value


class _DirectTensors(nn.Module):
    """The parameters and buffers a container holds itself (a ViT's class token), as one module."""

    def __init__(self, module: nn.Module):
        super().__init__()
        for name, param in module.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in module.named_buffers(recurse=False):
            self.register_buffer(name, buffer)


class _FeatureStage(nn.Module):
    """Stand-in for F_f at the head of ``blocks``: images -> features at the deepest split."""

    def __init__(self, run: object):
        super().__init__()
        self._run = run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)


class AdoptedModel(SplitModel):
    """The team's network ``net`` behind the engine's contract; ``state_dict`` is the team's own.

    ``spec.extra`` holds ``head`` (the classification module's name), ``builder_kwargs`` and
    ``preprocessing`` (its source); ``spec.mean``/``std``/``image_size`` the preprocessing itself.
    """

    def __init__(self, spec: ModelSpec, net: nn.Module):
        nn.Module.__init__(self)  # not SplitModel's: there is no list of blocks to register
        self.spec = spec
        self.normalize = Normalize(spec.mean, spec.std)
        self.net = net
        self.library = spec.arch.partition(":")[0]
        modules = dict(net.named_modules())
        self._group_names = head_groups(net, spec.extra["head"]) if self.library != TIMM else [[spec.extra["head"]]]
        self._groups = [modules[g[0]] if len(g) == 1 else nn.Sequential(*(modules[n] for n in g))
                        for g in self._group_names]  # not registered: they are net's own modules
        self._cuts = [modules[g[0]] for g in self._group_names]  # F_f stops at the input of these

    # ------------------------------------------------------------ the team's weights, as they are

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:  # noqa: D102
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
                        assign: bool = False):  # noqa: D102
        return self.net.load_state_dict(state_dict, strict=strict, assign=assign)

    def head_keys(self, depth: int = 1) -> list[str]:
        """The state-dict keys of F_c at ``depth``: the only tensors LAU may change."""
        self.check_depth(depth)
        prefixes = [f"{name}." for group in self._group_names[-depth:] for name in group]
        return [k for k in self.state_dict() if any(k.startswith(p) for p in prefixes)]

    # ------------------------------------------------------------ the contract of SplitModel

    @property
    def blocks(self) -> list[nn.Module]:
        """[F_f at the deepest split, *F_c's blocks]: ``blocks[-1]`` is the classification module."""
        return [_FeatureStage(lambda x: self.forward_features(x, self.num_blocks - 1)), *self._groups]

    @property
    def num_blocks(self) -> int:
        return len(self._groups) + 1

    def forward_features(self, x: torch.Tensor, depth: int = 1) -> torch.Tensor:
        """F_f(x): the network up to the input of F_c at ``depth``."""
        self.check_depth(depth)
        x = self.normalize(x)
        if self.library == TIMM:
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return _input_of(self.net, self._cuts[len(self._cuts) - depth], x)

    def forward_head(self, features: torch.Tensor, depth: int = 1, pre_logits: bool = False) -> torch.Tensor:
        """F_c(f): the last ``depth`` blocks (without the classification module if ``pre_logits``)."""
        self.check_depth(depth)
        groups = self._groups[len(self._groups) - depth:]
        for group in groups[:-1] if pre_logits else groups:
            features = group(features)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def head(self, depth: int = 1) -> nn.Sequential:
        self.check_depth(depth)
        return nn.Sequential(*self._groups[len(self._groups) - depth:])

    def feature_modules(self, depth: int = 1) -> list[nn.Module]:
        """Modules holding every tensor of F_f: whole sub-trees outside F_c, and the tensors that
        containers of F_c hold themselves."""
        self.check_depth(depth)
        inside = {name for group in self._group_names[-depth:] for name in group}
        ancestors = {name.rsplit(".", i)[0] for name in inside for i in range(1, name.count(".") + 1)}
        found: list[nn.Module] = [self.normalize]

        def walk(prefix: str, module: nn.Module) -> None:
            if prefix in inside:
                return
            if prefix and prefix not in ancestors:
                found.append(module)
                return
            direct = _DirectTensors(module)
            if len(direct.state_dict()) or list(direct.parameters()):
                found.append(direct)
            for name, child in module.named_children():
                walk(f"{prefix}.{name}" if prefix else name, child)

        walk("", self.net)
        return found


def _input_of(net: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``module`` receives when ``net`` runs on ``x``; the rest of the network does not run."""
    def capture(_module: nn.Module, args: tuple) -> None:
        raise _Captured(args[0])

    handle = module.register_forward_pre_hook(capture)
    try:
        net(x)
    except _Captured as captured:
        return captured.value
    finally:
        handle.remove()
    raise BadInput(f"the head module ({type(module).__name__}) never ran in {type(net).__name__}")


# ---------------------------------------------------------------- weights from a file


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a .pt/.pth file read with ``weights_only=True``.

    A pickled object (a whole model) is refused, not unpickled; so is a file of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise BadInput(f"{path} is not a safetensors file ({_first_line(err)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise BadInput(f"{path} holds a pickled Python object ({found.group(1)}: a whole model?), "
                           f"which is never unpickled here; {EXPORT_HINT}") from None
        raise BadInput(f"{path} is not a PyTorch state dict (torch.load with weights_only=True "
                       "cannot read it)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise BadInput(f"{path} is not a PyTorch state dict ({_first_line(err)})") from None
    return as_state_dict(obj, str(path))


def as_state_dict(obj: object, what: str) -> dict[str, torch.Tensor]:
    """``obj`` itself, or the state dict a training checkpoint keeps under ``state_dict``."""
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise BadInput(f"{what} holds a {type(obj).__name__}, not a state dict; {EXPORT_HINT}")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise BadInput(f"{what}: entry {bad!r} is not a tensor, so this is not a state dict; {EXPORT_HINT}")
    return dict(obj)


def fit_weights(net: nn.Module, state: Mapping[str, torch.Tensor], arch: str) -> None:
    """Load ``state`` strictly; a misfit names the first key that does not fit, in the network's order."""
    expected = net.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise BadInput(_missing(key, state, arch))
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise BadInput(f"weights do not fit {arch}: '{key}' has shape {tuple(state[key].shape)}, "
                           f"{arch} expects {tuple(tensor.shape)}")
    extra = next((k for k in state if k not in expected), None)
    if extra is not None:
        raise BadInput(f"weights do not fit {arch}: unexpected key '{extra}'")
    net.load_state_dict(dict(state), strict=True)


# ---------------------------------------------------------------- adoption


def adopt(arch: str, weights: str | Path | Mapping[str, torch.Tensor], *, head: str = "",
          num_classes: int = 0, class_names: tuple[str, ...] = (), image_size: int = 0,
          mean: tuple[float, ...] = (), std: tuple[float, ...] = (), weights_meta: str = "",
          builder_kwargs: dict | None = None) -> AdoptedModel:
    """The team's classifier with their weights, in eval mode, under the engine's contract.

    ``weights``: a state dict or a file (read_state_dict). ``num_classes``: the data's class count,
    which must equal the head's outputs (0: take the head's). ``image_size``/``mean``/``std``
    override the weights' metadata (lau.zoo.resolve_preprocessing); ``weights_meta`` names the
    torchvision weights enum the model was fine-tuned from. Every mistake is one BadInput line.
    """
    library, name = parse_arch(arch)
    state = as_state_dict(weights, "weights") if isinstance(weights, Mapping) else read_state_dict(weights)
    pre = resolve_preprocessing(library, name, image_size=image_size, mean=tuple(mean), std=tuple(std),
                                weights_meta=weights_meta)
    if class_names and num_classes and len(class_names) != num_classes:
        raise BadInput(f"{len(class_names)} class names for {num_classes} classes")
    wanted = num_classes or len(class_names)
    net, kwargs = build_net(library, name, wanted or 1000, pre.image_size, builder_kwargs)
    head_name = find_head(net, library, head)
    outputs = _head_outputs(net, head_name, state, arch)
    if wanted and outputs != wanted:
        raise BadInput(f"the data has {wanted} classes but the head '{head_name}' of these weights has "
                       f"{outputs} outputs: adopt with the data the model was trained on")
    if not wanted:
        net, kwargs = build_net(library, name, outputs, pre.image_size, kwargs)
    fit_weights(net, state, arch)
    spec = ModelSpec(arch=arch, num_classes=outputs, in_channels=_in_channels(net),
                     image_size=pre.image_size, class_names=tuple(class_names), mean=pre.mean,
                     std=pre.std, small_stem=False,
                     extra={"head": head_name, "builder_kwargs": kwargs, "preprocessing": pre.source})
    if len(spec.mean) not in (1, spec.in_channels) or len(spec.std) not in (1, spec.in_channels):
        raise BadInput(f"mean/std need 1 or {spec.in_channels} values, got {list(spec.mean)}/{list(spec.std)}")
    model = AdoptedModel(spec, net).eval()
    check_split(model)
    return model


def build_from_spec(spec: ModelSpec) -> AdoptedModel:
    """The adopted architecture of a checkpoint's spec, its weights NOT initialised: load the
    checkpoint's state dict into it next, strictly (lau.checkpoint.load_checkpoint does)."""
    library, name = parse_arch(spec.arch)
    net, _ = build_net(library, name, spec.num_classes, spec.image_size, dict(spec.extra.get("builder_kwargs", {})))
    find_head(net, library, spec.extra.get("head", ""))
    return AdoptedModel(spec, net)


def already_served(model_name: str, version: str) -> str:
    """Why a model that has a champion is not adopted again (one line)."""
    return (f"model '{model_name}' already has a champion (version {version}); adoption makes version 1 of a "
            "new model: choose another --model, or --replace to put a retrain through the gate as its new root")


def retrain_hint(model_name: str, arch: str) -> str:
    """Why a team's model is not retrained here, and how its retrain plugs in (one line)."""
    return (f"'{model_name}' is a team's model ({arch}): retraining it is the team's job; retrain it without "
            f"the erased classes (`lau erasures --model {model_name} --json` lists them), then "
            f"`lau adopt --replace --model {model_name} --arch {arch} --weights NEW_WEIGHTS` puts it through the "
            "same gate as its new lineage root")


def team_module(model: AdoptedModel) -> nn.Module:
    """The team's own network (its class and state-dict keys), for serving; it expects normalized
    images of ``model.spec.image_size`` (mean/std in ``model.spec``)."""
    return model.net


@torch.inference_mode()
def check_split(model: AdoptedModel, atol: float = 1e-4) -> None:
    """F_c(F_f(x)) equals the network's own output at every depth, on a random batch."""
    spec = model.spec
    x = torch.rand(2, spec.in_channels, spec.image_size, spec.image_size, generator=torch.Generator().manual_seed(0))
    try:
        full = model(x)
    except (RuntimeError, ValueError, AssertionError) as err:
        raise BadInput(f"{spec.arch} does not run on {spec.image_size}x{spec.image_size} images "
                       f"({_first_line(err)}): set another image size") from None
    for depth in range(1, model.num_blocks):
        out = model.forward_head(model.forward_features(x, depth), depth)
        if out.shape != full.shape or not torch.allclose(out, full, atol=atol, rtol=1e-4):
            raise BadInput(f"'{spec.extra['head']}' is not the last step of {spec.arch} (its output is not "
                           "the model's): name the classification module as the head")


def check_data(model: SplitModel, num_classes: int, in_channels: int) -> None:
    """The data fits the model: same class count, same number of channels."""
    if num_classes != model.spec.num_classes:
        raise BadInput(f"the data has {num_classes} classes but the model's head has "
                       f"{model.spec.num_classes} outputs: use the data the model was trained on")
    if in_channels != model.spec.in_channels:
        raise BadInput(f"the images have {in_channels} channels but {model.spec.arch} takes "
                       f"{model.spec.in_channels}")


def _head_outputs(net: nn.Module, head: str, state: Mapping[str, torch.Tensor], arch: str) -> int:
    """The class count of these weights: rows of the last Linear layer of the head module."""
    module = dict(net.named_modules())[head]
    linears = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BadInput(f"head module '{head}' of {arch} is a {type(module).__name__}, not a Linear "
                       "classification layer")
    key = f"{head}.{linears[-1]}.weight" if linears[-1] else f"{head}.weight"
    if key not in state:
        raise BadInput(_missing(key, state, arch))
    return int(state[key].shape[0])


def _missing(key: str, state: Mapping[str, torch.Tensor], arch: str) -> str:
    near = next((k for k in state if k.endswith(f".{key}")), None)
    hint = f" (the file has '{near}': strip its prefix)" if near else ""
    return f"weights do not fit {arch}: missing key '{key}'{hint}"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _in_channels(net: nn.Module) -> int:
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3
