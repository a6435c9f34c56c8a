"""Per-element invariant (L = 0) on-site means: the one fit shared by the `mean` baseline and the
on-site priors of learned backbones (hamgnn's `onsite_prior`).

For an on-site block B of element Z, its spin-independent part is

    B0 = B                        (spinless, real)
    B0 = Re (B_uu + B_dd) / 2     (spinful, spin-major layout of docs/adr/0006)

(for a time-reversal-symmetric hermitian block B_dd = B_uu^*, so B0 = Re B_uu, real symmetric).
Its L = 0 coupled coefficients (shell pairs with l_a = l_b; each tr(B0_ab) / sqrt(2l+1) times a
normalised identity) averaged over the labelled training atoms of element Z give c_Z; the prior is
WE^-1(c_Z), and kron(I2, WE^-1(c_Z)) on spinful data. Being a multiple of the identity per shell pair,
it commutes with every D_layout(R) and kron(U, D_layout(R)) and is time-reversal even.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from zoo.errors import ModelError
from zoo.physics.coupling import WignerEckart


def scalar_slots(we: WignerEckart) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets of the L = 0 irreps in the coupled vector, index of each one's transpose partner (b, a))."""
    scalar, offset = [], 0
    for _, ir in we.irreps:
        if ir.l == 0:
            scalar.append(offset)
        offset += ir.dim
    pair_of = {k: ab for ab, sl in we.pair_slices.items() for k in range(sl.start, sl.stop)}
    partner = []
    for k in scalar:
        a, b = pair_of[k]
        partner.append(scalar.index(we.pair_slices[(b, a)].start + (k - we.pair_slices[(a, b)].start)))
    return torch.tensor(scalar, dtype=torch.long), torch.tensor(partner, dtype=torch.long)


def symmetric_means(means: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """c_ab and c_ba averaged: the same number for a symmetric block, so the output stays hermitian
    whatever the values (a trained or perturbed parameter)."""
    return 0.5 * (means + means[:, partner])


def spin_independent_part(blocks: torch.Tensor) -> torch.Tensor:
    """Real spin-independent part of on-site blocks: the blocks themselves if real, else
    Re (uu + dd) / 2 of spin-major [.., 2n, 2n] blocks (docs/adr/0006)."""
    if not blocks.is_complex():
        return blocks
    n = blocks.shape[-1] // 2
    return 0.5 * (blocks[..., :n, :n] + blocks[..., n:, n:]).real


@torch.no_grad()
def fit_invariant_means(train_graphs: Iterable, we: WignerEckart, scalar_idx: torch.Tensor,
                        z_index: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(means [n_elements, n_scalars] float64, labelled atoms per element [n_elements] long) over the
    labelled on-site blocks of `train_graphs` (virtual halo atoms skipped); an unseen element gets 0.

    Runs on `z_index`'s device (graphs arrive on the CPU; the coupling matrix lives with the model).
    """
    dev = z_index.device
    ne, ns = int((z_index >= 0).sum()), int(scalar_idx.numel())
    total = torch.zeros(ne, ns, dtype=torch.float64, device=dev)
    count = torch.zeros(ne, dtype=torch.float64, device=dev)
    seen = False
    for g in train_graphs:
        seen = True
        keep = g.node_label_mask.to(dev) if hasattr(g, "node_label_mask") else \
            torch.ones(g.num_nodes, dtype=torch.bool, device=dev)
        y = spin_independent_part(g.y_node.detach().to(dev)[keep]).to(torch.float64)
        zi = z_index[g.z.to(dev)[keep]]
        if (zi < 0).any():
            raise ModelError(f"{where}: graph {getattr(g, 'name', '?')!r} holds an element outside the "
                             f"dataset's layout")
        total.index_add_(0, zi, we.to_coupled(y)[:, scalar_idx])
        count.index_add_(0, zi, torch.ones_like(zi, dtype=torch.float64))
    if not seen:
        raise ModelError(f"{where}: no training graphs to fit the on-site means from")
    return total / count.clamp(min=1.0)[:, None], count.long()


def invariant_blocks(we: WignerEckart, scalar_idx: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Blocks [N, n_max, n_max] (real, spinless layout) whose only coupled irreps are the L = 0 ones c [N, n_scalars]."""
    coupled = c.new_zeros(c.shape[0], we.irreps.dim)
    coupled[:, scalar_idx] = c
    return we.to_blocks(coupled)


class InvariantOnsitePrior(nn.Module):
    """Fixed per-element L = 0 on-site means (buffers, so checkpoints restore them); zero until `fit`.

    `forward(z)` gives the spinless blocks WE^-1(c_Z) [N, n_max, n_max]; a spinful backbone adds them
    inside kron(I2, .) with the rest of its spin-independent output.
    """

    def __init__(self, we: WignerEckart, n_elements: int):
        super().__init__()
        self.we = we
        scalar, partner = scalar_slots(we)
        self.register_buffer("scalar_idx", scalar, persistent=False)
        self.register_buffer("partner", partner, persistent=False)
        self.register_buffer("means", torch.zeros(n_elements, len(scalar), dtype=torch.float64))
        #: labelled training atoms per element that `fit` averaged over (0: element unseen, mean 0)
        self.register_buffer("n_fitted", torch.zeros(n_elements, dtype=torch.long))

    @torch.no_grad()
    def fit(self, train_graphs: Iterable, z_index: torch.Tensor, where: str) -> None:
        mean, count = fit_invariant_means(train_graphs, self.we, self.scalar_idx, z_index, where)
        self.means.copy_(symmetric_means(mean, self.partner))
        self.n_fitted.copy_(count)

    def forward(self, z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Prior blocks of species indices z [N] in `dtype`."""
        return invariant_blocks(self.we, self.scalar_idx, self.means[z].to(dtype))
