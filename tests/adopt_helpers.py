"""Generated data and 'team' models for the adoption tests: a tiny ImageFolder of coloured shapes and
torchvision/timm classifiers trained on it for a few steps, as a team would have made them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision.models as tvm
from torch import nn

from lau.data import Split, to_float

SIDE = 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Team:
    """How a team built and fine-tuned its classifier: constructor, the part it fine-tuned, file type."""

    make: Callable[[], nn.Module]
    trained: str  # module the team fine-tuned (its classification layer or whole classifier)
    suffix: str  # how it exported the state dict: ".pt" (torch.save) or ".safetensors"


TEAMS = {
    "torchvision:resnet18": Team(lambda: tvm.resnet18(num_classes=4), "fc", ".pt"),
    "torchvision:mobilenet_v3_small": Team(lambda: tvm.mobilenet_v3_small(num_classes=4), "classifier", ".pth"),
    "torchvision:efficientnet_b0": Team(lambda: tvm.efficientnet_b0(num_classes=4), "classifier", ".safetensors"),
    "torchvision:vit_b_16": Team(lambda: tvm.vit_b_16(num_classes=4, image_size=SIDE), "heads", ""),
    # timm zero-initialises the last BatchNorm of every residual block, which leaves the residual
    # branches off until trained: a trained model has them on (same state-dict keys either way)
    "timm:resnet18": Team(lambda: timm.create_model("resnet18", num_classes=4, zero_init_last=False), "fc",
                          ".safetensors"),
    "timm:convnext_atto": Team(lambda: timm.create_model("convnext_atto", num_classes=4), "head", ".pt"),
    "timm:vit_tiny_patch16_224": Team(lambda: timm.create_model("vit_tiny_patch16_224", num_classes=4, img_size=SIDE),
                                      "head", ".safetensors"),
}
HEADS = {"torchvision:resnet18": "fc", "torchvision:mobilenet_v3_small": "classifier.3",
         "torchvision:efficientnet_b0": "classifier.1", "torchvision:vit_b_16": "heads.head",
         "timm:resnet18": "fc", "timm:convnext_atto": "head.fc", "timm:vit_tiny_patch16_224": "head"}

SHAPES = (("circle", (220, 40, 40)), ("square", (40, 200, 60)), ("triangle", (50, 80, 230)),
          ("cross", (230, 200, 40)))


def write_shapes(root: Path, per_class: int = 16, side: int = 32, seed: int = 0) -> Path:
    """One PNG per image, one folder per class: a coloured shape at a random place and size on a
    noisy grey background."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for name, colour in SHAPES:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            background = rng.integers(120, 136, size=(side, side, 3), dtype=np.uint8)
            image = Image.fromarray(background)
            draw = ImageDraw.Draw(image)
            size = int(rng.integers(side // 2, side // 2 + 3))
            x, y = (int(v) + (side - size) // 2 for v in rng.integers(-2, 3, size=2))  # near the centre
            jitter = tuple(int(np.clip(c + rng.integers(-10, 11), 0, 255)) for c in colour)
            box = (x, y, x + size, y + size)
            if name == "circle":
                draw.ellipse(box, fill=jitter)
            elif name == "square":
                draw.rectangle(box, fill=jitter)
            elif name == "triangle":
                draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=jitter)
            else:
                third = size // 3
                draw.rectangle((x + third, y, x + 2 * third, y + size), fill=jitter)
                draw.rectangle((x, y + third, x + size, y + 2 * third), fill=jitter)
            image.save(folder / f"{i:03d}.png")
    return root


def normalized(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images as the team's network receives them."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (to_float(images) - m) / s


def train_team_model(net: nn.Module, head: nn.Module, split: Split, mean: tuple[float, ...],
                     std: tuple[float, ...], steps: int = 40, lr: float = 0.02, seed: int = 0) -> nn.Module:
    """The team's fine-tuning, briefly: BatchNorm statistics recomputed on the train images (as
    torch.optim.swa_utils.update_bn does; they move off their defaults), then ``steps`` full-batch
    Adam steps on the classification layer ``head`` over the frozen features. Cheap on CPU, yet
    every class is learnt."""
    torch.manual_seed(seed)
    x, y = normalized(split.train_images, mean, std), split.train_labels
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one pass gives the statistics of that pass
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            if norms:
                net.train()(x)
                captured.clear()
            net.eval()(x)
    finally:
        hook.remove()
    for norm in norms:
        norm.momentum = 0.1
    features = captured[0]
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(head(features), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()
