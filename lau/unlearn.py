"""Layer Attack Unlearning (Kim, Lee, Woo, AAAI 2024, arXiv 2312.16823), as Figure 2 draws it.

    features f = F_f(x)            frozen, eval mode, read from the cache
    teacher    = copy of F_c       refreshed once per epoch
    Partial-PGD: f_adv = f + delta, ascend CE(teacher(f_adv), y), |delta|_inf <= eps
    attacked logits = teacher(f_adv)            -> a nearby wrong class
    mask        = student still recognises y (by less than `margin` logits: 0 = the paper)
    targets     = softmax(attacked) where mask, else softmax(student).detach()
    loss        = (1 - a) CE(student, argmax targets) + a T^2 KL(softmax(targets / T) || student / T)
    stop        = every forget sample unlearned, tested before every optimizer step

Only D_f is used, as in the paper, unless ``retain_weight`` > 0 adds distillation towards the
original head on cached retain features (our extension; 0 = the paper's retain-free setting).

With depth >= 2 and ``hidden_edit``, a closed-form edit of F_c's last hidden Linear layer runs
first (see edit_hidden): the paper has no such step; it lowers how decodable the forgotten class
stays in the features the classifier reads (the probe residual), which depth-1 LAU cannot touch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lau.config import UnlearnConfig
from lau.data import class_mask
from lau.features import FeatureSet
from lau.models import SplitModel, clone
from lau.utils import progress


@dataclass(frozen=True)
class LAUResult:
    """What the optimisation did: steps taken, epochs begun, whether every sample was unlearned."""

    steps: int
    epochs: int
    converged: bool
    seconds: float


def partial_pgd(teacher: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                eps: torch.Tensor, step: torch.Tensor, steps: int) -> torch.Tensor:
    """Untargeted L-inf PGD on *features* against the teacher: raises CE(teacher(f), y).

    ``eps`` and ``step`` broadcast against one sample's features (per-dimension scales).
    Returns the attacked features, inside the ball ``|f_adv - f| <= eps``.
    """
    delta = torch.zeros_like(features, requires_grad=True)  # (B, D)
    for _ in range(steps):
        loss = F.cross_entropy(teacher(features + delta), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += step * grad.sign()
            delta.copy_(torch.maximum(torch.minimum(delta, eps), -eps))
    return (features + delta).detach()


def not_unlearned(logits: torch.Tensor, labels: torch.Tensor, margin: float = 0.0,
                  blocked: tuple[int, ...] = ()) -> torch.Tensor:
    """True for rows whose true class still beats every other class by more than ``-margin``.

    With margin 0 these are exactly the rows the student still classifies correctly. A row that
    lands on a ``blocked`` class (one forgotten earlier) is not unlearned either: the best blocked
    class counts as the true one, and only the classes still served count as the others.
    """
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)  # (B,)
    others = logits.scatter(1, labels[:, None], float("-inf"))  # (B, K)
    if blocked:
        true_logit = torch.maximum(true_logit, logits[:, list(blocked)].max(dim=1).values)
        others[:, list(blocked)] = float("-inf")
    return true_logit - others.max(dim=1).values > -margin


def masked_targets(student_logits: torch.Tensor, attacked_logits: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Target probabilities: the attacked ones where ``mask``, the student's own (detached) elsewhere."""
    own = F.softmax(student_logits.detach(), dim=1)
    if attacked_logits.shape[0] == 0:
        return own
    targets = own.clone()
    targets[mask] = F.softmax(attacked_logits, dim=1)
    return targets


def lau_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float,
             alpha: float) -> torch.Tensor:
    """(1 - a) CE(student, argmax targets) + a T^2 KL(softmax(targets / T) || log_softmax(student / T)).

    Softmax over the target *probabilities* is the paper's double softmax.
    """
    hard = F.cross_entropy(student_logits, target_probs.argmax(dim=1))
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(target_probs / temperature, dim=1), reduction="batchmean")
    return (1.0 - alpha) * hard + alpha * temperature ** 2 * soft


def balanced_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, mask: torch.Tensor,
                  temperature: float, alpha: float) -> torch.Tensor:
    """The paper's loss averaged over the rows still recognised (``mask``), plus cross-entropy that
    keeps the already-unlearned rows on the class they moved to.

    The paper averages one loss over the whole batch. Its double-softmax KD term pulls unlearned
    rows towards a near-uniform output, closing their margin, and the batch mean dilutes the push
    on the last few stubborn rows; both stall sequential deletions (measured in the README).
    """
    loss = student_logits.new_zeros(())
    if mask.any():
        loss = loss + lau_loss(student_logits[mask], target_probs[mask], temperature, alpha)
    if (~mask).any():
        loss = loss + F.cross_entropy(student_logits[~mask], target_probs[~mask].argmax(dim=1))
    return loss


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)): keeps retain outputs where they were."""
    return temperature ** 2 * F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                                       F.softmax(teacher_logits / temperature, dim=1),
                                       reduction="batchmean")


def unlearn_head(head: nn.Module, forget_features: torch.Tensor, forget_labels: torch.Tensor,
                 cfg: UnlearnConfig, feature_std: torch.Tensor, *,
                 retain_features: torch.Tensor | None = None,
                 blocked_classes: tuple[int, ...] = ()) -> LAUResult:
    """Run LAU on F_c in place, from the forget features alone (plus retain ones if enabled).

    ``blocked_classes`` (every class forgotten in this lineage) are never chosen as attack targets:
    a forgotten sample must land on a class that is still served.
    """
    start = time.perf_counter()
    head.eval()  # F_c's dropout off and BatchNorm statistics fixed; gradients still flow
    original = copy.deepcopy(head).requires_grad_(False)
    optimizer = make_optimizer(head, cfg)
    eps, step = cfg.eps * feature_std, cfg.step * feature_std  # per-dimension feature scale
    generator = torch.Generator().manual_seed(cfg.seed)
    use_retain = cfg.retain_weight > 0 and retain_features is not None and len(retain_features) > 0
    if use_retain:
        with torch.no_grad():
            retain_targets = original(retain_features)
    n = len(forget_labels)
    batch = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
    steps = 0
    for epoch in range(cfg.max_epochs):
        teacher = copy.deepcopy(head).requires_grad_(False)  # copy per epoch
        order = torch.randperm(n, generator=generator) if batch < n else torch.arange(n)
        for i in range(0, n, batch):
            rows = order[i: i + batch]
            features, labels = forget_features[rows], forget_labels[rows]
            student_logits = head(features)
            if batch == n:
                remaining = not_unlearned(student_logits.detach(), labels, cfg.margin, blocked_classes)
            else:
                with torch.no_grad():
                    remaining = not_unlearned(head(forget_features), forget_labels, cfg.margin, blocked_classes)
            if not remaining.any():  # stop test before every optimizer step
                return LAUResult(steps, epoch + 1, True, time.perf_counter() - start)
            mask = not_unlearned(student_logits.detach(), labels, cfg.margin, blocked_classes)
            attacked = partial_pgd(teacher, features[mask], labels[mask], eps, step, cfg.pgd_steps)
            with torch.no_grad():
                attacked_logits = teacher(attacked)
                if blocked_classes:
                    attacked_logits[:, list(blocked_classes)] = float("-inf")
            targets = masked_targets(student_logits, attacked_logits, mask)
            if cfg.balanced:  # each part averaged over its own rows (see balanced_loss)
                loss = balanced_loss(student_logits, targets, mask, cfg.temperature, cfg.alpha)
            else:
                loss = lau_loss(student_logits, targets, cfg.temperature, cfg.alpha)
            if use_retain:
                retain_in, retain_out = retain_features, retain_targets
                if 0 < cfg.retain_batch < len(retain_features):
                    pick = torch.randint(len(retain_features), (cfg.retain_batch,), generator=generator)
                    retain_in, retain_out = retain_features[pick], retain_targets[pick]
                loss = loss + cfg.retain_weight * distill_loss(head(retain_in), retain_out, cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    with torch.no_grad():
        converged = not not_unlearned(head(forget_features), forget_labels, cfg.margin,
                                       blocked_classes).any()
    return LAUResult(steps, cfg.max_epochs, bool(converged), time.perf_counter() - start)


def _last_hidden_linear(head: nn.Sequential) -> nn.Linear | None:
    """The last nn.Linear of F_c before its classification block (None if there is none)."""
    linears = [m for m in head[:-1].modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


@torch.no_grad()
def edit_hidden(head: nn.Sequential, features: torch.Tensor, labels: torch.Tensor,
                forget_classes: tuple[int, ...], ridge: float) -> bool:
    """Move the forget samples' pre-activations z = W x + b at F_c's last hidden Linear layer onto
    the mean z of the nearest class still served, leaving the other samples' z where they were:

        W' = argmin sum_retain |W' x - z|^2 + sum_forget |W' x - target|^2 + lam |W' - W|^2
           = W + (T - W X_f) X_f^T (X^T X + lam I)^-1          (x with a trailing 1 for the bias)

    ``lam`` = ``ridge`` x the mean diagonal of X^T X: larger keeps the edit smaller and smoother,
    which is what carries it over to the test images. Returns False (nothing changed) when F_c
    has no hidden Linear layer reading (batch, dim) inputs.
    """
    linear = _last_hidden_linear(head)
    if linear is None:
        return False
    captured: list[torch.Tensor] = []
    hook = linear.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        head[:-1](features)
    finally:
        hook.remove()
    x = captured[0]
    if x.dim() != 2:
        return False
    x = torch.cat([x.double(), x.new_ones(len(x), 1, dtype=torch.float64)], dim=1)  # (N, D+1)
    weight = torch.cat([linear.weight.double(), linear.bias.double()[:, None]], dim=1)  # (H, D+1)
    z = x @ weight.T  # (N, H)
    forget = class_mask(labels, forget_classes)
    served = [int(c) for c in labels[~forget].unique()]
    means = torch.stack([z[labels == c].mean(0) for c in served])  # (C, H)
    targets = means[torch.cdist(z[forget], means).argmin(1)]  # (B, H)
    gram = x.T @ x
    lam = ridge * float(gram.diagonal().mean())
    factor = torch.linalg.cholesky(gram + lam * torch.eye(len(gram), dtype=gram.dtype))  # SPD: lam > 0
    delta = torch.cholesky_solve(x[forget].T @ (targets - z[forget]), factor).T  # (H, D+1)
    weight += delta
    linear.weight.copy_(weight[:, :-1].to(linear.weight.dtype))
    linear.bias.copy_(weight[:, -1].to(linear.bias.dtype))
    return True


def make_optimizer(head: nn.Module, cfg: UnlearnConfig) -> torch.optim.Optimizer:
    """Adam (the paper's re-implementation) or SGD with momentum over F_c's trainable parameters."""
    params = [p for p in head.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    return torch.optim.Adam(params, lr=cfg.lr)


SMALL_HEAD = 2_000_000  # parameters; below this, one thread beats several (no sync, no spin-waits)


@contextlib.contextmanager
def _threads_for(head: nn.Module) -> Iterator[None]:
    """A small F_c runs on one CPU thread: its matrix products are microseconds long, and thread
    hand-offs (worse on a busy machine) would cost more than they save."""
    before = torch.get_num_threads()
    small = sum(p.numel() for p in head.parameters()) < SMALL_HEAD
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _warm_up(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, cfg: UnlearnConfig) -> None:
    """One untimed step on a throwaway copy: PyTorch's first-call costs are not unlearning time."""
    scratch = copy.deepcopy(head)
    unlearn_head(scratch, features, labels, dataclasses.replace(cfg, max_epochs=1, margin=1e9),
                 torch.ones_like(features[0]))


def feature_scale(train_features: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of the training features (floored), the unit of eps and step."""
    std = train_features.std(dim=0)
    return std.clamp_min(1e-6 if std.numel() == 0 else max(float(std.mean()) * 1e-3, 1e-6))


def unlearn(model: SplitModel, features: FeatureSet, forget_classes: tuple[int, ...],
            cfg: UnlearnConfig, *, blocked_classes: tuple[int, ...] = ()) -> tuple[SplitModel, LAUResult]:
    """LAU on a copy of ``model``: only F_c (the last ``features.depth`` blocks) changes."""
    depth = features.depth
    candidate = clone(model)
    candidate.freeze_features(depth)
    head = candidate.head(depth)
    forget_rows = class_mask(features.train_labels, forget_classes)
    retain = features.train_features[~forget_rows] if cfg.retain_weight > 0 else None
    blocked = tuple(sorted(set(blocked_classes) | set(forget_classes)))
    edit_s = 0.0
    if depth >= 2 and cfg.hidden_edit:  # one linear solve: every thread helps
        start = time.perf_counter()
        edited = edit_hidden(head, features.train_features, features.train_labels, blocked, cfg.hidden_ridge)
        edit_s = time.perf_counter() - start
        progress(f"[lau] hidden edit {'done' if edited else 'skipped (no hidden Linear layer)'} "
                 f"in {edit_s * 1000:.1f} ms")
    with _threads_for(head):
        _warm_up(candidate.head(depth), features.train_features[:2], features.train_labels[:2], cfg)
        torch.manual_seed(cfg.seed)
        result = unlearn_head(head, features.train_features[forget_rows], features.train_labels[forget_rows],
                              cfg, feature_scale(features.train_features), retain_features=retain,
                              blocked_classes=blocked)
        result = dataclasses.replace(result, seconds=result.seconds + edit_s)
    progress(f"[lau] classes {list(forget_classes)}: {result.steps} steps, {result.epochs} epochs, "
             f"{'converged' if result.converged else 'NOT converged'} in {result.seconds * 1000:.1f} ms")
    candidate.eval()
    return candidate, result
