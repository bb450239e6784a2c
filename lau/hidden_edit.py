"""The closed-form hidden-layer edit that runs before LAU at depth >= 2 (``unlearn.hidden_edit``).

The paper has no such step: it lowers how decodable the forgotten class stays in the features the
classifier reads (the probe residual), which depth-1 LAU cannot touch.
"""

from __future__ import annotations

import torch
from torch import nn

from lau.data import class_mask


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
