"""LC-Net layers: the LC layer (text-CNN over distance-sorted neighbour harmonics), the
GATv2-style interaction layer and the output MLP.

LC layer (paper Fig. 2): for a frame R and an atom a, every neighbour k of a is a "word"
y_k = Y_lm(R r_ak) / (1 + |r_ak|), l = 0..lmax (25 values for lmax = 4; real harmonics in the
internal convention, 'component' normalisation: Y_00 = 1). Words are sorted by distance; ties
within `tol` (Angstrom; chains of gaps <= tol form one group) are ordered by their rounded LOCAL
coordinates, so the order (and the feature) does not depend on the atom order and rotates with the frame. The first
`max_neighbors` words form the "sentence" [K, 25]; filters of widths h (2, 3, 4) slide over it,
ReLU, max-pool over the valid window positions (windows that reach into padding are masked; a
sentence shorter than h keeps its one zero-padded window), dense -> s_a in R^{N_LC}.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch_geometric.utils import softmax

from zoo.physics.wigner import spherical_harmonics

#: local coordinates are rounded to this (Angstrom) when they order equidistant neighbours
_ROUND = 1e-6


def _distance_groups(dist: torch.Tensor, valid: torch.Tensor, tol: float) -> torch.Tensor:
    """[M, K] rank of each neighbour's distance group: sorted distances start a new group where
    the gap to the previous one exceeds tol. Unlike bins floor(d / tol), equal distances are never
    split by rounding noise at a bin edge (2.3 A / 1e-4 A is one), which would make the word order
    depend on the orientation of a perfect crystal."""
    d = dist.masked_fill(~valid, 1e300)
    srt, idx = d.sort(dim=1, stable=True)
    gap = (srt[:, 1:] - srt[:, :-1]) > tol
    gid = torch.cat([torch.zeros_like(gap[:, :1]), gap], dim=1).to(torch.float64).cumsum(dim=1)
    return torch.empty_like(gid).scatter_(1, idx, gid)


def sentence(R: torch.Tensor, vec: torch.Tensor, dist: torch.Tensor, valid: torch.Tensor, lmax: int,
             max_neighbors: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Words of neighbour rows in frames: R [M, 3, 3], vec [M, K, 3] (bonds a -> k), dist [M, K]
    (float64, +inf padding), valid [M, K] -> (words [M, min(K, max_neighbors), (lmax+1)^2],
    n_valid [M])."""
    loc = torch.einsum("mab,mkb->mka", R, vec)
    # stable sorts from the last key to the first: (distance bin, local x, local y, local z)
    order = torch.arange(vec.shape[1], device=vec.device).expand(vec.shape[0], -1)
    keys = [torch.round(loc.detach().to(torch.float64)[..., ax] / _ROUND) for ax in (2, 1, 0)]
    keys.append(_distance_groups(dist, valid, tol))
    for key in keys:
        k = torch.gather(key, 1, order)
        order = torch.gather(order, 1, torch.argsort(k, dim=1, stable=True))
    order = order[:, :max_neighbors]
    loc = torch.gather(loc, 1, order[..., None].expand(-1, -1, 3))
    ok = torch.gather(valid, 1, order)
    r = loc.norm(dim=-1)
    safe = torch.where(ok[..., None], loc, torch.ones_like(loc))
    y = spherical_harmonics(list(range(lmax + 1)), safe) / (1.0 + r.clamp_min(0))[..., None]
    y = y * ok[..., None].to(y.dtype)
    return y, ok.sum(dim=1)


class TextCNN(nn.Module):
    """Kim's text-CNN over a sentence of words [M, K, n_in] -> [M, n_out]."""

    def __init__(self, n_in: int, filters: int, windows: Sequence[int], n_out: int):
        super().__init__()
        self.windows = [int(h) for h in windows]
        self.convs = nn.ModuleList(nn.Conv1d(n_in, filters, h) for h in self.windows)
        self.dense = nn.Linear(filters * len(self.windows), n_out)

    def forward(self, words: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
        x = words.transpose(1, 2)  # [M, n_in, K]
        feats = []
        for h, conv in zip(self.windows, self.convs):
            xh = x if x.shape[-1] >= h else nn.functional.pad(x, (0, h - x.shape[-1]))
            y = torch.relu(conv(xh))  # [M, F, K - h + 1]
            pos = torch.arange(y.shape[-1], device=y.device)
            ok = (pos[None, :] <= (n_valid[:, None] - h).clamp(min=0)) & (n_valid[:, None] > 0)
            feats.append((y * ok[:, None, :].to(y.dtype)).amax(dim=-1))
        return self.dense(torch.cat(feats, dim=-1))


class MLP(nn.Module):
    """Phi(h-swish(Phi(x))): the paper's edge update (eq. 4) and output (eq. 5) form."""

    def __init__(self, n_in: int, hidden: int, n_out: int):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(n_in, hidden), nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(nn.functional.hardswish(self.lin1(x)))


class Interaction(nn.Module):
    """One interaction layer (eqs. 2-4), messages sender (edge_index[0]) -> receiver (edge_index[1]):

        alpha_ik = softmax_k a^T LeakyReLU(W [v_i || v_k || e_ik || s_ik])     (GATv2, one head)
        v_i <- v_i + sum_k alpha_ik W_v v_k
        e_p <- Phi(h-swish(Phi(v_a || v_o || e_p || s_p)))                     (no edge residual)

    Edge quantities live on pairs p = {i, j} in anchor order (a, o), so e_ij = e_ji. With frame
    averaging (`cand`: (Candidates of the tied pairs, s_c [C, ns] of each candidate frame)), a tied
    pair's e_p is the mean of the update over its candidate frames (their anchor order and s_c),
    so it does not depend on which candidate Algorithm 1 would pick; `s` then holds the tied pairs'
    candidate mean.
    """

    def __init__(self, nv: int, ne: int, ns: int, hidden: int, slope: float):
        super().__init__()
        self.att = nn.Linear(2 * nv + ne + ns, nv)
        self.a = nn.Linear(nv, 1, bias=False)
        self.value = nn.Linear(nv, nv, bias=False)
        self.edge = MLP(2 * nv + ne + ns, hidden, ne)
        self.slope = slope

    def forward(self, v, e, s, send, recv, pair_of, anchor, other, cand=None):
        ep, sp = e[pair_of], s[pair_of]
        logit = self.a(nn.functional.leaky_relu(self.att(torch.cat([v[recv], v[send], ep, sp], -1)),
                                                self.slope)).squeeze(-1)
        alpha = softmax(logit, recv, num_nodes=v.shape[0])
        v = v.index_add(0, recv, alpha[:, None] * self.value(v[send]))
        e_new = self.edge(torch.cat([v[anchor], v[other], e, s], -1))
        if cand is not None:
            c, sc = cand
            e_new = c.mean(self.edge(torch.cat([v[c.anchor], v[c.other], e[c.owner], sc], -1)), e_new)
        return v, e_new
