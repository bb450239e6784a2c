"""Classifiers as a sequence of blocks, split into features F_f and head F_c.

Every model honours one contract (timm's): ``forward_features(x, depth)`` runs all blocks but the
last ``depth``; ``forward_head(f, depth)`` runs those; ``penultimate`` stops before the last block.
``depth`` = 1 is the paper's setting: F_c is the classification layer alone.
Inputs are float images in [0, 1], (B, C, H, W); the model normalizes them itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from lau.errors import BadInput


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model (saved as JSON inside every checkpoint)."""

    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    class_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    small_stem: bool = True
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_json(cls, data: dict) -> ModelSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("class_names", "mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


class Normalize(nn.Module):
    """Per-channel (x - mean) / std with the training set's statistics as buffers."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SplitModel(nn.Module):
    """``normalize`` then ``blocks``; the trailing ``depth`` blocks are the trainable head F_c."""

    def __init__(self, spec: ModelSpec, blocks: list[nn.Module]):
        super().__init__()
        self.spec = spec
        self.normalize = Normalize(spec.mean, spec.std)
        self.blocks = nn.ModuleList(blocks)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def check_depth(self, depth: int) -> None:
        if not 1 <= depth < self.num_blocks:
            raise BadInput(f"depth {depth} is out of range for {self.spec.arch}: "
                           f"choose 1-{self.num_blocks - 1}")

    def forward_features(self, x: torch.Tensor, depth: int = 1) -> torch.Tensor:
        """F_f(x): every block but the last ``depth``."""
        self.check_depth(depth)
        x = self.normalize(x)
        for block in self.blocks[: self.num_blocks - depth]:
            x = block(x)
        return x

    def forward_head(self, features: torch.Tensor, depth: int = 1, pre_logits: bool = False) -> torch.Tensor:
        """F_c(f): the last ``depth`` blocks (without the last one if ``pre_logits``)."""
        self.check_depth(depth)
        blocks = self.blocks[self.num_blocks - depth:]
        for block in blocks[:-1] if pre_logits else blocks:
            features = block(features)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, 1), 1)

    def head(self, depth: int = 1) -> nn.Sequential:
        """F_c as a module that shares its parameters with this model."""
        self.check_depth(depth)
        return nn.Sequential(*self.blocks[self.num_blocks - depth:])

    def feature_modules(self, depth: int = 1) -> list[nn.Module]:
        self.check_depth(depth)
        return [self.normalize, *self.blocks[: self.num_blocks - depth]]

    def freeze_features(self, depth: int = 1) -> None:
        """F_f frozen and in eval mode: no gradient, BatchNorm statistics untouched."""
        for module in self.feature_modules(depth):
            module.eval()
            module.requires_grad_(False)


# ------------------------------------------------------------------ builders


def _cnn(spec: ModelSpec) -> list[nn.Module]:
    """Two conv blocks and a 128-d hidden layer: fast on 28x28 CPU training."""
    side = spec.image_size // 4
    return [
        nn.Sequential(nn.Conv2d(spec.in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                      nn.MaxPool2d(2)),  # (B, 32, S/2, S/2)
        nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten()),  # (B, 64 * S/4 * S/4)
        nn.Sequential(nn.Linear(64 * side * side, 128), nn.ReLU()),  # (B, 128)
        nn.Linear(128, spec.num_classes),  # (B, K)
    ]


def _resnet(builder: Callable[..., nn.Module]) -> Callable[[ModelSpec], list[nn.Module]]:
    def build(spec: ModelSpec) -> list[nn.Module]:
        net = builder(weights=None, num_classes=spec.num_classes)
        if spec.small_stem:
            net.conv1 = nn.Conv2d(spec.in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif spec.in_channels != 3:
            net.conv1 = nn.Conv2d(spec.in_channels, 64, 7, stride=2, padding=3, bias=False)
        return [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2,
                net.layer3, nn.Sequential(net.layer4, net.avgpool, nn.Flatten()),  # (B, 512 or 2048)
                net.fc]
    return build


def _vgg16(spec: ModelSpec) -> list[nn.Module]:
    from torchvision.models import vgg16

    net = vgg16(weights=None, num_classes=spec.num_classes)
    layers = list(net.features)
    layers[0] = nn.Conv2d(spec.in_channels, 64, 3, padding=1)
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    if spec.small_stem:  # keep at least a 1x1 map on small inputs: drop pools past log2(size)
        for i in pools[max(0, spec.image_size.bit_length() - 1):]:
            layers[i] = nn.Identity()
        width, pool = 512, nn.AdaptiveAvgPool2d(1)
    else:
        width, pool = 4096, net.avgpool
    stages, start = [], 0
    for end in pools:
        stages.append(nn.Sequential(*layers[start:end + 1]))
        start = end + 1
    flat = 512 * (1 if spec.small_stem else 49)
    return [*stages,
            nn.Sequential(pool, nn.Flatten(), nn.Linear(flat, width), nn.ReLU(), nn.Dropout()),
            nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout()),
            nn.Linear(width, spec.num_classes)]


class _VitEmbed(nn.Module):
    """Patchify, prepend the class token, add position embeddings: (B, 1 + P, D)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # (B, P, D)
        token = self.class_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        return self.dropout(torch.cat([token, x], dim=1) + self.pos_embedding)


class _ClassToken(nn.Module):
    """Final LayerNorm, then the class token: (B, D)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)[:, 0]


def _vit_tiny(spec: ModelSpec) -> list[nn.Module]:
    """A 4-layer, 64-wide ViT (torchvision's VisionTransformer) for small images."""
    from torchvision.models.vision_transformer import VisionTransformer

    patch = 4 if spec.image_size % 4 == 0 else 2 if spec.image_size % 2 == 0 else 1
    vit = VisionTransformer(image_size=spec.image_size, patch_size=patch, num_layers=4, num_heads=4,
                            hidden_dim=64, mlp_dim=128, num_classes=spec.num_classes)
    vit.conv_proj = nn.Conv2d(spec.in_channels, 64, kernel_size=patch, stride=patch)
    layers = list(vit.encoder.layers)
    return [_VitEmbed(vit), *layers[:-1], nn.Sequential(layers[-1], _ClassToken(vit.encoder.ln)), vit.heads]


def _torchvision(name: str) -> Callable[..., nn.Module]:
    import torchvision.models as tvm

    return getattr(tvm, name)


MODELS: dict[str, Callable[[ModelSpec], list[nn.Module]]] = {
    "cnn": _cnn,
    "resnet18": lambda spec: _resnet(_torchvision("resnet18"))(spec),
    "resnet50": lambda spec: _resnet(_torchvision("resnet50"))(spec),
    "vgg16": _vgg16,
    "vit_tiny": _vit_tiny,
}


def build_model(spec: ModelSpec) -> SplitModel:
    """Create a model by registered name; unknown names list the valid ones."""
    if spec.arch not in MODELS:
        raise BadInput(f"unknown arch '{spec.arch}'; choose one of: {', '.join(MODELS)}")
    if spec.arch == "cnn" and spec.image_size < 4:
        raise BadInput(f"cnn needs images of at least 4x4, got {spec.image_size}")
    return SplitModel(spec, MODELS[spec.arch](spec))


def clone(model: SplitModel) -> SplitModel:
    """An independent copy (weights and buffers), for methods that must not touch the original."""
    return copy.deepcopy(model)
