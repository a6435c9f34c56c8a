"""Optimizers torch does not ship: Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm").

Betas use the PyTorch convention (weights of the OLD value), beta = 1 - the paper's beta:
(0.98, 0.92, 0.99) here = the paper's (0.02, 0.08, 0.01). With g_k the gradient, d_k = g_k - g_{k-1}
(d_1 = 0) and step k = 1, 2, ...:

    m_k = b1 m_{k-1} + (1 - b1) g_k
    v_k = b2 v_{k-1} + (1 - b2) d_k
    n_k = b3 n_{k-1} + (1 - b3) (g_k + b2 d_k)^2
    u_k = m_k / (1 - b1^k) + b2 v_k / (1 - b2^k)
    theta_k = (theta_{k-1} - lr u_k / (sqrt(n_k / (1 - b3^k)) + eps)) / (1 + lr wd)

Algorithm 1 of the paper without restarts, decoupled weight decay in its proximal form (the division).
Moments start at zero and are bias-corrected (as the authors' PyTorch code): step 1 then equals the
paper's initialisation m_0 = g_0, n_0 = g_0^2, v = 0.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from zoo.errors import ConfigError


class Adan(torch.optim.Optimizer):
    """Adan with decoupled (proximal) weight decay; betas (b1, b2, b3) in the PyTorch convention."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        if not lr > 0 or not eps >= 0 or not weight_decay >= 0:
            raise ConfigError(f"Adan: need lr > 0, eps >= 0, weight_decay >= 0 (got {lr}, {eps}, {weight_decay})")
        if len(betas) != 3 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"Adan: betas must be three numbers in [0, 1), got {list(betas)}")
        super().__init__(params, dict(lr=lr, betas=tuple(float(b) for b in betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2, b3 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adan does not support sparse gradients")
                g = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"], st["v"], st["n"] = (torch.zeros_like(p) for _ in range(3))
                    st["prev_grad"] = g.clone()  # so d_1 = 0
                st["step"] += 1
                k = st["step"]
                d = g - st["prev_grad"]
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).add_(d, alpha=1 - b2)
                st["n"].mul_(b3).addcmul_(g + b2 * d, g + b2 * d, value=1 - b3)
                st["prev_grad"].copy_(g)
                update = st["m"] / (1 - b1 ** k) + b2 * st["v"] / (1 - b2 ** k)
                denom = (st["n"] / (1 - b3 ** k)).sqrt_().add_(eps)
                p.addcdiv_(update, denom, value=-lr).div_(1 + lr * wd)
        return loss
