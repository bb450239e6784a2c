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
original head on a stratified sample of cached retain features (our extension; 0 = the paper's
retain-free setting). ``unlearn.method: lau`` is gate-aware: D_f is every train and validation
image of the forgotten classes, and a few candidate runs (lau/search.py) are tried, the one with
the least validation retain drop kept. ``lau_paper`` runs the paper's plain setting once.

With depth >= 2 and ``hidden_edit``, a closed-form edit of F_c's last hidden Linear layer runs
first (see edit_hidden): the paper has no such step; it lowers how decodable the forgotten class
stays in the features the classifier reads (the probe residual), which depth-1 LAU cannot touch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lau.config import UnlearnConfig
from lau.features import FeatureSet
from lau.hidden_edit import edit_hidden
from lau.models import SplitModel, clone
from lau.search import CANDIDATES, CandidateRecord, LAUData, accept_at_once, choose, gather, retain_drop
from lau.utils import progress


@dataclass(frozen=True)
class LAUResult:
    """What the optimisation did: steps taken, epochs begun, whether every sample was unlearned.

    ``unlearn`` adds which candidate it kept and why (every candidate tried, with its validation
    retain drop), and the sizes of the samples it read; ``seconds`` counts the whole search.
    """

    steps: int
    epochs: int
    converged: bool
    seconds: float
    method: str = "lau"
    candidate: str = ""
    val_retain_drop: float | None = None
    candidates: tuple[CandidateRecord, ...] = ()
    forget_rows: int = 0
    retain_rows: int = 0

    def to_json(self) -> dict:
        """Plain JSON (the audit report's "lau" section)."""
        data = dataclasses.asdict(self)
        data["candidates"] = [dataclasses.asdict(c) for c in self.candidates]
        return data

    def tags(self) -> dict[str, str]:
        """The version tags that say how this candidate was made."""
        tried = ",".join(f"{c.name}:{'ok' if c.converged else 'no'}:{_fmt(c.val_retain_drop)}"
                         for c in self.candidates)
        return {"lau.method": self.method, "lau.candidate": self.candidate,
                "lau.val_retain_drop": _fmt(self.val_retain_drop), "lau.candidates_tried": tried,
                "lau.steps": str(self.steps), "lau.converged": str(self.converged).lower(),
                "lau.forget_rows": str(self.forget_rows), "lau.retain_rows": str(self.retain_rows)}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def partial_pgd(teacher: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor, labels: torch.Tensor,
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


def frozen_copy(head: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The teacher: ``head`` as it is now, as a function of its detached copied weights (no module copy)."""
    state = {name: tensor.detach().clone() for name, tensor in head.state_dict(keep_vars=True).items()}
    return lambda features: torch.func.functional_call(head, state, (features,))


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
    a forgotten sample must land on a class that is still served. With ``batch_size`` below |D_f|,
    a step reads a shuffled slice of D_f (its cost stays bounded however large D_f is); the stop
    test still reads all of it.
    """
    start = time.perf_counter()
    head.eval()  # F_c's dropout off and BatchNorm statistics fixed; gradients still flow
    optimizer = make_optimizer(head, cfg)
    eps, step = cfg.eps * feature_std, cfg.step * feature_std  # per-dimension feature scale
    generator = torch.Generator().manual_seed(cfg.seed)
    use_retain = cfg.retain_weight > 0 and retain_features is not None and len(retain_features) > 0
    retain_targets = None
    if use_retain:
        with torch.no_grad():
            retain_targets = head(retain_features)  # the original F_c's outputs, before any step
    if forget_features.is_inference():  # read from a cache under inference mode: autograd needs a copy
        forget_features = forget_features.clone()
    n = len(forget_labels)
    batch = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
    steps = 0
    for epoch in range(cfg.max_epochs):
        teacher = frozen_copy(head)  # copy per epoch
        order = torch.randperm(n, generator=generator) if batch < n else torch.arange(n)
        for i in range(0, n, batch):
            if batch == n:
                rows = order
                student_logits = head(forget_features)
                remaining = not_unlearned(student_logits.detach(), forget_labels, cfg.margin, blocked_classes)
            else:
                with torch.no_grad():
                    remaining = not_unlearned(head(forget_features), forget_labels, cfg.margin, blocked_classes)
                rows = order[i: i + batch]
            if not remaining.any():  # stop test before every optimizer step, on all of D_f
                return LAUResult(steps, epoch + 1, True, time.perf_counter() - start)
            features, labels = forget_features[rows], forget_labels[rows]
            if batch < n:
                student_logits = head(features)
            retain = (retain_features, retain_targets) if use_retain else None
            _lau_step(head, teacher, optimizer, (features, labels, student_logits), cfg, (eps, step),
                      blocked_classes, retain)
            steps += 1
    with torch.no_grad():
        converged = not not_unlearned(head(forget_features), forget_labels, cfg.margin,
                                       blocked_classes).any()
    return LAUResult(steps, cfg.max_epochs, bool(converged), time.perf_counter() - start)


def _lau_step(head: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer,
              batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], cfg: UnlearnConfig,
              pgd: tuple[torch.Tensor, torch.Tensor], blocked_classes: tuple[int, ...],
              retain: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """One optimizer step of LAU on a batch (features, labels, the student's logits): attack the rows
    still recognised with the teacher, then pull the student toward the attacked outputs."""
    features, labels, student_logits = batch
    mask = not_unlearned(student_logits.detach(), labels, cfg.margin, blocked_classes)
    attacked = partial_pgd(teacher, features[mask], labels[mask], pgd[0], pgd[1], cfg.pgd_steps)
    with torch.no_grad():
        attacked_logits = teacher(attacked)
        if blocked_classes:
            attacked_logits[:, list(blocked_classes)] = float("-inf")
    targets = masked_targets(student_logits, attacked_logits, mask)
    if cfg.balanced:  # each part averaged over its own rows (see balanced_loss)
        loss = balanced_loss(student_logits, targets, mask, cfg.temperature, cfg.alpha)
    else:
        loss = lau_loss(student_logits, targets, cfg.temperature, cfg.alpha)
    if retain is not None:
        loss = loss + cfg.retain_weight * distill_loss(head(retain[0]), retain[1], cfg.temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


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


def paper_config(cfg: UnlearnConfig) -> UnlearnConfig:
    """The paper's plain setting (``unlearn.method: lau_paper``): retain-free, no margin, the batch-mean
    loss, every parameter of F_c, Adam lr 0.01 on batches of 64 (the public re-implementation), D_f
    = the training images of the class, no hidden edit, no search."""
    return dataclasses.replace(cfg, method="lau_paper", margin=0.0, balanced=False, retain_weight=0.0,
                               optimizer="adam", lr=0.01, batch_size=64, hidden_edit=False, search=False,
                               scope="full")


def _classifier(head: nn.Module) -> nn.Linear:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("F_c has no Linear classification layer")
    return linears[-1]


def _restrict_to_rows(head: nn.Module, rows: tuple[int, ...]) -> list:
    """Only the classification layer's rows (and biases) of ``rows`` may change: every other
    parameter of F_c is frozen, and the gradient of the other rows is zeroed."""
    classifier = _classifier(head)
    head.requires_grad_(False)
    classifier.requires_grad_(True)
    mask = torch.zeros(classifier.out_features, 1)
    mask[list(rows)] = 1.0
    handles = [classifier.weight.register_hook(lambda grad: grad * mask)]
    if classifier.bias is not None:
        handles.append(classifier.bias.register_hook(lambda grad: grad * mask[:, 0]))
    return handles


def _run_candidate(model: SplitModel, depth: int, data: LAUData, cfg: UnlearnConfig,
                   blocked: tuple[int, ...]) -> tuple[nn.Sequential, LAUResult]:
    """One LAU run on a fresh copy of F_c (the hidden edit first at depth >= 2)."""
    start = time.perf_counter()
    head = copy.deepcopy(model.head(depth))
    if depth >= 2 and cfg.hidden_edit:
        edit_features = torch.cat([data.retain_features, data.forget_features])
        edit_labels = torch.cat([data.retain_labels, data.forget_labels])
        edit_hidden(head, edit_features, edit_labels, blocked, cfg.hidden_ridge)
    handles = _restrict_to_rows(head, blocked) if cfg.scope == "rows" else []
    try:
        result = unlearn_head(head, data.forget_features, data.forget_labels, cfg, data.scale,
                              retain_features=data.retain_features, blocked_classes=blocked)
    finally:
        for handle in handles:
            handle.remove()
    return head.eval(), dataclasses.replace(result, seconds=time.perf_counter() - start)


@torch.no_grad()
def _record(name: str, head: nn.Module, data: LAUData, result: LAUResult,
            parent_val_logits: torch.Tensor) -> CandidateRecord:
    drop = retain_drop(parent_val_logits, head(data.val_retain_features), data.val_retain_labels)
    forget_acc = None
    if len(data.val_forget_labels):
        forget_acc = round(100.0 * (head(data.val_forget_features).argmax(1) == data.val_forget_labels)
                           .float().mean().item(), 4)
    return CandidateRecord(name, result.steps, result.converged, drop, forget_acc, round(result.seconds, 5))


def unlearn(model: SplitModel, features: FeatureSet, forget_classes: tuple[int, ...],
            cfg: UnlearnConfig, *, blocked_classes: tuple[int, ...] = ()) -> tuple[SplitModel, LAUResult]:
    """LAU on a copy of ``model``: only F_c (the last ``features.depth`` blocks) changes.

    ``method: lau`` tries the candidates of lau/search.py in order (or only ``unlearn.scope`` with
    ``search: false``) and keeps the one with the least validation retain drop among those that
    forget (the first that forgets and loses nothing on validation ends the search);
    ``lau_paper`` runs the paper's plain setting once. ``seconds`` counts the whole search.
    """
    depth = features.depth
    cfg = paper_config(cfg) if cfg.method == "lau_paper" else cfg
    blocked = tuple(sorted(set(blocked_classes) | set(forget_classes)))
    names = list(CANDIDATES) if cfg.search and cfg.method == "lau" else [cfg.scope]
    with _threads_for(model.head(depth)):
        _warm_up(model.head(depth), features.train_features[:2], features.train_labels[:2], cfg)
        start = time.perf_counter()
        data = gather(features, blocked, cfg)
        with torch.no_grad():
            parent_val_logits = model.head(depth)(data.val_retain_features)
        runs, records = [], []
        for name in names:
            setting = dataclasses.replace(cfg, **CANDIDATES.get(name, {"scope": name}))
            torch.manual_seed(cfg.seed)
            head, result = _run_candidate(model, depth, data, setting, blocked)
            runs.append((head, result))
            records.append(_record(name, head, data, result, parent_val_logits))
            if accept_at_once(records[-1]):
                break
        best = choose(records)
        seconds = time.perf_counter() - start
    head, result = runs[best]
    candidate = clone(model)
    candidate.freeze_features(depth)
    candidate.head(depth).load_state_dict(head.state_dict())
    candidate.eval()
    result = dataclasses.replace(result, seconds=seconds, method=cfg.method, candidate=records[best].name,
                                 val_retain_drop=records[best].val_retain_drop, candidates=tuple(records),
                                 forget_rows=len(data.forget_labels), retain_rows=len(data.retain_labels))
    progress(f"[lau] classes {list(forget_classes)}: candidate {result.candidate} of "
             f"{[f'{r.name} {_fmt(r.val_retain_drop)}' for r in records]}, {result.steps} steps, "
             f"{'converged' if result.converged else 'NOT converged'} in {seconds * 1000:.1f} ms")
    return candidate, result
