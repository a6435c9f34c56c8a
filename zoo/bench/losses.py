"""Masked losses over labelled nodes/edges and real orbitals.

Every loss is f(m) of a weighted mean m = sum(w * g(e)) / sum(w) over the selected block
entries (e = pred - ref; w = 1 on-site, `offdiag_weight` off-site). Keeping the sum and the
count apart lets distributed training normalise by the *global* count, so the gradient of
W ranks equals the single-process gradient of the same effective batch.

    mse        g = |e|^2,                           f(m) = m
    mse_rmse   g = |e|^2,                           f(m) = m + sqrt(m)          (GEARS H)
    focal      g = |e|^2 (2 sigmoid(beta|e|) - 1)^gamma,  f(m) = m             (LC-Net style focal
               regression: large residuals keep full weight, already-small ones are damped).
               Not rotation-invariant: it acts on each global-frame matrix entry, so rotating a
               structure changes the loss (LC-Net applies it in its local frame, a model-owned loss)

A backbone can replace all of these with its own `loss_terms` / `loss_outer` (see the trainer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from zoo.data.torch_data import block_masks
from zoo.errors import ConfigError


@dataclass(frozen=True)
class LossSpec:
    name: str
    offdiag_weight: float = 1.0
    focal_beta: float = 20.0
    focal_gamma: float = 1.0


def abs2(e: torch.Tensor) -> torch.Tensor:
    """|e|^2, real for complex (spinful) errors too."""
    return e.real * e.real + e.imag * e.imag if e.is_complex() else e * e


def _penalty(spec: LossSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    if spec.name in ("mse", "mse_rmse"):
        return abs2
    if spec.name == "focal":
        return lambda e: abs2(e) * (2.0 * torch.sigmoid(spec.focal_beta * e.abs()) - 1.0) ** spec.focal_gamma
    raise ConfigError(f"unknown loss {spec.name!r}; known: {', '.join(LOSSES)}")


def outer(spec: LossSpec, m: torch.Tensor) -> torch.Tensor:
    """f(m) of the weighted mean."""
    return m + torch.sqrt(m.clamp(min=1e-30)) if spec.name == "mse_rmse" else m


def outer_grad(spec: LossSpec, m: torch.Tensor) -> torch.Tensor:
    """f'(m), used by the distributed surrogate loss."""
    if spec.name == "mse_rmse":
        return 1.0 + 0.5 / torch.sqrt(m.clamp(min=1e-30))
    return torch.ones_like(m)


LOSSES = ("mse", "mse_rmse", "focal")


def label_masks(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [N, n, n], [E, n, n]: real-orbital entries of labelled (non-virtual) blocks."""
    node_m, edge_m = block_masks(batch)
    node_m = node_m & batch.node_label_mask[:, None, None]
    edge_m = edge_m & batch.edge_label_mask[:, None, None]
    return node_m, edge_m


def masked_sums(spec: LossSpec, pred, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted penalty sum, weight sum) over labelled real-orbital entries of H."""
    g = _penalty(spec)
    node_m, edge_m = label_masks(batch)
    en = (pred.node_blocks - batch.y_node)[node_m]
    ee = (pred.edge_blocks - batch.y_edge)[edge_m]
    w = spec.offdiag_weight
    total = g(en).sum() + w * g(ee).sum()
    count = torch.as_tensor(float(en.numel()) + w * float(ee.numel()), dtype=total.dtype, device=total.device)
    return total, count


def loss_value(spec: LossSpec, pred, batch) -> torch.Tensor:
    """The loss of one (single-process) batch."""
    s, c = masked_sums(spec, pred, batch)
    if c.item() == 0:
        return s * 0.0
    return outer(spec, s / c)
