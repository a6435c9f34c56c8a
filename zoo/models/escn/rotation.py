"""Edge-aligned frames: per-edge Wigner-D that turn an edge onto the polar axis.

The frame is `zoo.physics.frames.edge_frame` (R_e r_hat = e_z, physical z being the polar
axis of the internal real-SH basis), and its Wigner-D comes from the shared batched
`zoo.physics.wigner.wigner_D_list`. `EdgeRotation` returns D_l(R_e^T) = D_l(R_e)^T, so
features go to the edge frame with D^T (edge on +z) and back with D. The roll about the edge
is the frame's gauge; the SO(2) layers commute with it, so the output does not depend on it.
No angles, no random roll: deterministic, and finite gradients also for edges on +-z.
"""

from __future__ import annotations

import torch

from zoo.physics.frames import edge_frame
from zoo.physics.wigner import wigner_D_list


class EdgeRotation(torch.nn.Module):
    """Computes, for edge vectors (physical frame), the Wigner-D blocks D_l(R_e^T), l = 0..lmax."""

    def __init__(self, lmax: int):
        super().__init__()
        self.lmax = lmax

    def forward(self, vec: torch.Tensor) -> list[torch.Tensor]:
        """vec [E, 3] (x, y, z; need not be unit) -> [D_0, ..., D_lmax], each [E, 2l+1, 2l+1]."""
        return wigner_D_list(self.lmax, edge_frame(vec).transpose(1, 2))


class MMajor:
    """Index maps between l-major components (l^2 + l + m) and the m-major order of the SO(2) layers.

    m-major, truncated at |m| <= mmax: [m=0: l=0..L], then for m = 1..mmax [(-m): l=m..L] [(+m): l=m..L].
    `local_rows[l]` are the rows m = -min(l, mmax)..min(l, mmax) of a degree-l block that survive.
    """

    def __init__(self, lmax: int, mmax: int):
        self.lmax, self.mmax = lmax, mmax
        # position of (l, m) inside the concatenation of truncated per-l blocks
        pos: dict[tuple[int, int], int] = {}
        k = 0
        self.local_rows: list[list[int]] = []
        for l in range(lmax + 1):
            mm = min(l, mmax)
            self.local_rows.append([l + m for m in range(-mm, mm + 1)])
            for m in range(-mm, mm + 1):
                pos[(l, m)] = k
                k += 1
        self.size = k
        order = [pos[(l, 0)] for l in range(lmax + 1)]
        for m in range(1, mmax + 1):
            order += [pos[(l, -m)] for l in range(m, lmax + 1)]
            order += [pos[(l, m)] for l in range(m, lmax + 1)]
        self.order = torch.tensor(order, dtype=torch.long)
        self.inverse = torch.argsort(self.order)
        self.order_list: list[int] = order
        self.inverse_list: list[int] = self.inverse.tolist()
        #: sizes of the m groups in m-major order: m=0, then (-m, +m) pairs
        self.m_sizes = [lmax + 1] + [2 * (lmax - m + 1) for m in range(1, mmax + 1)]


def to_edge_frame(x: torch.Tensor, wigner: list[torch.Tensor], mm: MMajor) -> torch.Tensor:
    """x [E, (L+1)^2, ...] global l-major -> [E, mm.size, ...] edge frame, m-major, |m| <= mmax."""
    e, tail = x.shape[0], x.shape[2:]
    # split (not slicing) so that the backward pass concatenates instead of filling zeros per degree
    blocks = x.reshape(e, x.shape[1], -1).split([2 * l + 1 for l in range(len(wigner))], dim=1)
    parts = [D.transpose(1, 2)[:, mm.local_rows[l], :] @ b for l, (D, b) in enumerate(zip(wigner, blocks))]
    # reorder to m-major by concatenating single rows (not index_select, whose backward fills a
    # zero tensor of the whole output and scatters into it): the backward is views and one cat per l
    rows = [r for p in parts for r in p.split(1, dim=1)]
    local = torch.cat([rows[k] for k in mm.order_list], dim=1)
    return local.reshape(e, mm.size, *tail)


def from_edge_frame(y: torch.Tensor, wigner: list[torch.Tensor], mm: MMajor) -> torch.Tensor:
    """Inverse of `to_edge_frame`: [E, mm.size, ...] m-major local -> [E, (L+1)^2, ...] global."""
    e, tail = y.shape[0], y.shape[2:]
    rows = y.reshape(e, y.shape[1], -1).split(1, dim=1)
    blocks, k = [], 0
    for r in mm.local_rows:  # the l-major rows of each degree, concatenated from m-major single rows
        blocks.append(torch.cat([rows[j] for j in mm.inverse_list[k:k + len(r)]], dim=1))
        k += len(r)
    out = torch.cat([D[:, :, mm.local_rows[l]] @ b for l, (D, b) in enumerate(zip(wigner, blocks))], dim=1)
    return out.reshape(e, out.shape[1], *tail)
