"""Training of the original model (and of the retrain / fine-tune baselines): seeded, deterministic."""

from __future__ import annotations

import time

import torch
from torch import nn

from lau.config import ModelConfig, TrainConfig
from lau.data import Split, to_float
from lau.models import ModelSpec, SplitModel, build_model
from lau.utils import device, progress


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def spec_for(split: Split, model_cfg: ModelConfig) -> ModelSpec:
    """The model spec that fits a prepared split (classes, channels, size, preprocessing)."""
    mean, std = split.mean_std()
    return ModelSpec(arch=model_cfg.arch, num_classes=split.num_classes, in_channels=split.in_channels,
                     image_size=split.image_size, class_names=split.class_names, mean=tuple(mean),
                     std=tuple(std), small_stem=model_cfg.small_stem)


def new_model(split: Split, model_cfg: ModelConfig, seed: int) -> SplitModel:
    """A freshly initialised model, seeded."""
    seed_everything(seed)
    return build_model(spec_for(split, model_cfg))


def fit(model: SplitModel, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, *,
        epochs: int | None = None, label: str = "train") -> SplitModel:
    """Adam + cross-entropy over (images, labels) for ``epochs`` (default ``cfg.epochs``)."""
    seed_everything(cfg.seed)
    dev = device()
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(cfg.seed)
    epochs = cfg.epochs if epochs is None else epochs
    for epoch in range(epochs):
        start, total, correct = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(labels), generator=generator)
        for i in range(0, len(order), cfg.batch_size):
            batch = order[i: i + cfg.batch_size]
            x, y = to_float(images[batch]).to(dev), labels[batch].to(dev)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            correct += (logits.argmax(1) == y).sum().item()
        progress(f"[{label}] epoch {epoch + 1}/{epochs} loss {total / max(len(labels), 1):.4f} "
                 f"acc {100.0 * correct / max(len(labels), 1):.2f}% ({time.perf_counter() - start:.1f}s)")
    model.eval()
    return model.cpu()
