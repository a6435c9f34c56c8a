"""Wigner-Eckart layer: a (2l1+1)x(2l2+1) block <-> its coupled irreps.

    B[m1, m2] = sum_{L, M} C^{l1 l2 L}_{m1 m2 M} c_L[M],   L = |l1-l2| .. l1+l2,
    parity of every c_L = (-1)^(l1+l2)

with C = sqrt(2L+1) * e3nn.wigner_3j(l1, l2, L), which makes the map orthonormal: the
squared error summed over a block equals the squared error summed over its coupled
coefficients. For a padded layout every slot pair (a, b) contributes its own irreps, in slot
order a-major; `irreps` is the whole list a backbone outputs per node or edge.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from e3nn import o3

from zoo.physics.basis import OrbitalLayout


@lru_cache(maxsize=None)
def coupling_matrix(l1: int, l2: int) -> np.ndarray:
    """Orthogonal Q [(2l1+1)(2l2+1), (2l1+1)(2l2+1)]: vec(B) = Q @ concat_L c_L."""
    cols = []
    for L in range(abs(l1 - l2), l1 + l2 + 1):
        c = o3.wigner_3j(l1, l2, L, dtype=torch.float64).numpy() * np.sqrt(2 * L + 1)
        cols.append(c.reshape((2 * l1 + 1) * (2 * l2 + 1), 2 * L + 1))
    return np.concatenate(cols, axis=1)


def block_to_coupled(block: np.ndarray, l1: int, l2: int) -> np.ndarray:
    return coupling_matrix(l1, l2).T @ np.asarray(block).reshape(-1)


def coupled_to_block(coeffs: np.ndarray, l1: int, l2: int) -> np.ndarray:
    return (coupling_matrix(l1, l2) @ coeffs).reshape(2 * l1 + 1, 2 * l2 + 1)


class WignerEckart(torch.nn.Module):
    """Converts padded blocks [..., n_max, n_max] <-> coupled irreps [..., irreps.dim]."""

    def __init__(self, layout: OrbitalLayout):
        super().__init__()
        self.layout = layout
        n = layout.n_max
        q = np.zeros((n * n, n * n))
        irreps = []
        col = 0
        # pair_slices[(a, b)] = slice of the coupled vector for slot pair (a, b)
        self.pair_slices: dict[tuple[int, int], slice] = {}
        for a, la in enumerate(layout.slot_ls):
            for b, lb in enumerate(layout.slot_ls):
                qa = coupling_matrix(la, lb)
                oa, ob = layout.slot_offsets[a], layout.slot_offsets[b]
                rows = ((oa + np.arange(2 * la + 1))[:, None] * n + (ob + np.arange(2 * lb + 1))[None, :]).reshape(-1)
                q[rows, col:col + qa.shape[1]] = qa
                self.pair_slices[(a, b)] = slice(col, col + qa.shape[1])
                col += qa.shape[1]
                p = 1 if (la + lb) % 2 == 0 else -1
                irreps += [(1, (L, p)) for L in range(abs(la - lb), la + lb + 1)]
        self.irreps = o3.Irreps(irreps)
        self.register_buffer("q", torch.as_tensor(q, dtype=torch.float64), persistent=False)

    def to_blocks(self, coupled: torch.Tensor) -> torch.Tensor:
        n = self.layout.n_max
        return (coupled @ self.q.to(coupled.dtype).T).reshape(*coupled.shape[:-1], n, n)

    def to_coupled(self, blocks: torch.Tensor) -> torch.Tensor:
        n = self.layout.n_max
        return blocks.reshape(*blocks.shape[:-2], n * n) @ self.q.to(blocks.dtype)

    def pair_mask(self, z_i: int, z_j: int) -> torch.Tensor:
        """bool [irreps.dim]: coupled coefficients that exist for an element pair (others are padding)."""
        m = torch.zeros(self.irreps.dim, dtype=torch.bool)
        si, sj = self.layout.slots_of[int(z_i)], self.layout.slots_of[int(z_j)]
        for a in si:
            for b in sj:
                m[self.pair_slices[(a, b)]] = True
        return m
