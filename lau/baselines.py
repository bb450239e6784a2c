"""Baselines on the same model and data, each on its own copy of the original model.

- ``retrain``: from scratch on the retain data (the gold standard; the cost LAU avoids).
- ``finetune``: a few epochs on the retain data (catastrophic forgetting of the forget class).
- ``neggrad``: gradient ascent on the forget data.
- ``random_label``: fine-tune on the forget data with random wrong labels.
- ``boundary_shrink``: Chen et al., CVPR 2023: FGSM neighbour search in *input* space against the
  original model, then fine-tune the whole model towards each sample's nearest wrong class.
The last three stop as soon as every forget image is misclassified (or at their epoch cap).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lau.config import BaselinesConfig, ModelConfig, TrainConfig
from lau.data import Split, class_mask, to_float
from lau.models import SplitModel, clone
from lau.train import fit, seed_everything, train_model
from lau.utils import device, progress


@dataclass(frozen=True)
class BaselineContext:
    split: Split
    forget_classes: tuple[int, ...]
    train: TrainConfig
    model: ModelConfig
    baselines: BaselinesConfig


def retrain(original: SplitModel, ctx: BaselineContext) -> SplitModel:
    """A fresh model trained on the retain images only, with the original's recipe (its best epoch
    chosen on the retain classes' validation images)."""
    return train_model(ctx.split, ctx.model, ctx.train, without=ctx.forget_classes, label="retrain").model


def finetune(original: SplitModel, ctx: BaselineContext) -> SplitModel:
    """The original, trained further on the retain images only."""
    keep = ~class_mask(ctx.split.train_labels, ctx.forget_classes)
    cfg = TrainConfig(epochs=ctx.baselines.finetune_epochs, batch_size=ctx.train.batch_size, optimizer="adamw",
                      lr=ctx.baselines.finetune_lr, schedule="constant", warmup_epochs=0, weight_decay=0.0,
                      augment="none", seed=ctx.train.seed)
    return fit(clone(original), ctx.split.train_images[keep], ctx.split.train_labels[keep], cfg,
               label="finetune")


def neggrad(original: SplitModel, ctx: BaselineContext) -> SplitModel:
    """Gradient ascent on the forget images' cross-entropy."""
    return _forget_loop(original, ctx, ctx.baselines.neggrad_lr, "neggrad",
                        lambda model, x, y: -F.cross_entropy(model(x), y))


def random_label(original: SplitModel, ctx: BaselineContext) -> SplitModel:
    """Cross-entropy towards a random wrong label for every forget image."""
    generator = torch.Generator().manual_seed(ctx.train.seed)
    k = ctx.split.num_classes

    def loss(model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift = torch.randint(1, k, y.shape, generator=generator).to(y.device)
        return F.cross_entropy(model(x), (y + shift) % k)

    return _forget_loop(original, ctx, ctx.baselines.random_label_lr, "random_label", loss)


def boundary_shrink(original: SplitModel, ctx: BaselineContext) -> SplitModel:
    """Boundary Shrink: the nearest wrong class by FGSM on the original, then fine-tune towards it."""
    attacker = clone(original).eval().requires_grad_(False).to(device())
    cfg = ctx.baselines
    step = cfg.boundary_shrink_bound / max(cfg.boundary_shrink_steps, 1)

    def loss(model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x.clone()
        for _ in range(cfg.boundary_shrink_steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(attacker(x_adv), y), x_adv)
            x_adv = (x + (x_adv.detach() + step * grad.sign() - x).clamp(-cfg.boundary_shrink_bound,
                                                                       cfg.boundary_shrink_bound)).clamp(0, 1)
        with torch.no_grad():
            neighbour = attacker(x_adv).scatter(1, y[:, None], float("-inf")).argmax(1)
        return F.cross_entropy(model(x), neighbour)

    return _forget_loop(original, ctx, cfg.boundary_shrink_lr, "boundary_shrink", loss)


def _forget_loop(original: SplitModel, ctx: BaselineContext, lr: float, label: str,
                 loss_fn: Callable[[SplitModel, torch.Tensor, torch.Tensor], torch.Tensor]) -> SplitModel:
    """Shared loop of the forget-data methods: whole model trainable, BatchNorm statistics frozen,
    stop as soon as every forget image is misclassified."""
    seed_everything(ctx.train.seed)
    dev = device()
    model = clone(original).to(dev).eval()
    rows = class_mask(ctx.split.train_labels, ctx.forget_classes)
    images, labels = ctx.split.train_images[rows], ctx.split.train_labels[rows]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(ctx.train.seed)
    bs = ctx.baselines.batch_size
    for epoch in range(ctx.baselines.max_epochs):
        if _all_forgotten(model, images, labels):
            break
        order = torch.randperm(len(labels), generator=generator)
        for i in range(0, len(order), bs):
            batch = order[i: i + bs]
            loss = loss_fn(model, to_float(images[batch]).to(dev), labels[batch].to(dev))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        progress(f"[{label}] epoch {epoch + 1}/{ctx.baselines.max_epochs} done")
    return model.cpu().eval()


@torch.no_grad()
def _all_forgotten(model: SplitModel, images: torch.Tensor, labels: torch.Tensor) -> bool:
    dev = device()
    for i in range(0, len(images), 512):
        if (model(to_float(images[i: i + 512]).to(dev)).argmax(1).cpu() == labels[i: i + 512]).any():
            return False
    return True


BASELINES: dict[str, Callable[[SplitModel, BaselineContext], SplitModel]] = {
    "retrain": retrain,
    "finetune": finetune,
    "neggrad": neggrad,
    "random_label": random_label,
    "boundary_shrink": boundary_shrink,
}
