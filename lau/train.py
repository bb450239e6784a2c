"""Training of the original model (and of the retrain / fine-tune baselines): seeded, deterministic.

The recipe: AdamW (or SGD with Nesterov momentum), one warm-up epoch then a cosine decay of the
learning rate to zero, optional random shifts / mirroring of the images (``train.augment``), and
the weights of the best epoch on the *validation* images kept at the end (the last epoch of a
noisy run is a coin toss; test images are never looked at to choose).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from lau.config import ModelConfig, TrainConfig
from lau.data import Split, class_mask, to_float
from lau.models import ModelSpec, SplitModel, build_model
from lau.utils import device, progress

EVAL_BATCH = 512


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training: mean loss and accuracy on the (augmented) batches, validation accuracy."""

    epoch: int
    loss: float
    train_acc: float
    val_acc: float | None
    lr: float
    seconds: float


@dataclass(frozen=True)
class TrainReport:
    """What ``train_model`` did: epochs run, the epoch kept (best on validation) and its accuracies."""

    epochs: int
    best_epoch: int
    train_acc: float
    val_acc: float | None
    test_acc: float | None
    seconds: float
    history: tuple[EpochRecord, ...]

    def to_json(self) -> dict:
        data = asdict(self)
        data["history"] = [asdict(r) for r in self.history]
        return data


@dataclass(frozen=True)
class Trained:
    """A trained model and its report."""

    model: SplitModel
    report: TrainReport


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


def train_model(split: Split, model_cfg: ModelConfig, cfg: TrainConfig, *, without: tuple[int, ...] = (),
                label: str = "train") -> Trained:
    """A new model trained on the split's train images (minus the classes ``without``), the best
    epoch on its validation images kept; accuracies on train, validation and test reported."""
    start = time.perf_counter()
    parts = {name: _rows(split, name, without) for name in ("train", "val", "test")}
    model = new_model(split, model_cfg, cfg.seed)
    model, history, best = _train(model, *parts["train"], cfg, val=parts["val"], label=label)
    accs = {name: accuracy_of(model, *parts[name]) for name in parts}
    model.cpu()
    report = TrainReport(len(history), best, accs["train"], accs["val"], accs["test"],
                         round(time.perf_counter() - start, 3), tuple(history))
    progress(f"[{label}] kept epoch {best}/{len(history)}: train {_pct(accs['train'])} val {_pct(accs['val'])} "
             f"test {_pct(accs['test'])} ({report.seconds:.1f}s)")
    return Trained(model, report)


def fit(model: SplitModel, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, *,
        val: tuple[torch.Tensor, torch.Tensor] | None = None, epochs: int | None = None,
        label: str = "train") -> SplitModel:
    """Train ``model`` with the recipe on (images, labels); with ``val``, keep its best epoch."""
    return _train(model, images, labels, cfg, val=val, epochs=epochs, label=label)[0]


def _train(model: SplitModel, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, *,
           val: tuple[torch.Tensor, torch.Tensor] | None, epochs: int | None = None,
           label: str) -> tuple[SplitModel, list[EpochRecord], int]:
    seed_everything(cfg.seed)
    dev = device()
    model.to(dev)
    epochs = cfg.epochs if epochs is None else epochs
    steps_per_epoch = max(math.ceil(len(labels) / cfg.batch_size), 1)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, epochs, steps_per_epoch))
    generator = torch.Generator().manual_seed(cfg.seed)
    shift = augment_shift(cfg.augment, images)
    has_val = val is not None and len(val[1]) > 0
    history: list[EpochRecord] = []
    best_epoch, best_key, best_state = epochs, None, None
    for epoch in range(1, epochs + 1):
        start, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        loss, acc = _epoch(model, images, labels, cfg, optimizer, scheduler, generator, shift)
        val_acc = val_loss = None
        if has_val:
            val_acc, val_loss = evaluate_images(model, *val)
            key = (val_acc, -val_loss)
            if best_key is None or key > best_key:
                best_epoch, best_key, best_state = epoch, key, copy.deepcopy(model.state_dict())
        history.append(EpochRecord(epoch, round(loss, 5), round(acc, 3), None if val_acc is None else round(val_acc, 3),
                                   lr, round(time.perf_counter() - start, 2)))
        progress(f"[{label}] epoch {epoch}/{epochs} loss {loss:.4f} acc {acc:.2f}%"
                 + (f" val {val_acc:.2f}%" if val_acc is not None else "") + f" ({history[-1].seconds:.1f}s)")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model.cpu(), history, best_epoch


def _epoch(model: SplitModel, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
           optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
           generator: torch.Generator, shift: int) -> tuple[float, float]:
    """One pass in a seeded order; returns the mean loss and accuracy of the batches."""
    dev = device()
    model.train()
    total, correct, seen = 0.0, 0, 0
    order = torch.randperm(len(labels), generator=generator)
    for i in range(0, len(order), cfg.batch_size):
        batch = order[i: i + cfg.batch_size]
        if len(batch) < 2:  # BatchNorm cannot train on a single image
            continue
        x = augment(to_float(images[batch]), shift, cfg.augment == "shift_flip", generator).to(dev)
        y = labels[batch].to(dev)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(batch)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(batch)
    return total / max(seen, 1), 100.0 * correct / max(seen, 1)


def make_optimizer(model: SplitModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum 0.9, over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, epochs: int, steps_per_epoch: int):  # noqa: ANN201 - a step -> factor callable
    """Linear warm-up over ``warmup_epochs``, then cosine to 0 at the last step (or constant)."""
    warmup = min(cfg.warmup_epochs, max(epochs - 1, 0)) * steps_per_epoch
    total = max(epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))

    return factor


def augment_shift(mode: str, images: torch.Tensor) -> int:
    """Pixels of random shift: 1/8 of the side for ``shift`` and ``shift_flip``, 0 for ``none``.

    Off by default: on synth_shapes, 10-12 epochs, it cost 3 points of validation accuracy on the
    CNN and 7 on ResNet18 (both underfit at that budget; docs/results.md)."""
    if mode in ("shift", "shift_flip"):
        return max(1, int(images.shape[-1]) // 8)
    return 0


def augment(x: torch.Tensor, shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (edges replicated) and optional horizontal flip."""
    if shift:
        b, _, h, w = x.shape
        padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")  # (B, C, H+2s, W+2s)
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
        x = padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)
    if flip:
        mirrored = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


@torch.inference_mode()
def evaluate_images(model: SplitModel, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Accuracy (%) and mean cross-entropy of ``model`` in eval mode on uint8 images."""
    dev = device()
    was_training = model.training
    model.to(dev).eval()
    correct, loss = 0, 0.0
    for i in range(0, len(labels), EVAL_BATCH):
        logits = model(to_float(images[i: i + EVAL_BATCH]).to(dev))
        y = labels[i: i + EVAL_BATCH].to(dev)
        correct += (logits.argmax(1) == y).sum().item()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
    model.train(was_training)
    n = max(len(labels), 1)
    return 100.0 * correct / n, loss / n


def accuracy_of(model: SplitModel, images: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Accuracy (%) rounded to 4 places, None for no images."""
    return round(evaluate_images(model, images, labels)[0], 4) if len(labels) else None


def _rows(split: Split, part: str, without: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = getattr(split, f"{part}_images"), getattr(split, f"{part}_labels")
    if not without:
        return images, labels
    keep = ~class_mask(labels, without)
    return images[keep], labels[keep]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"
