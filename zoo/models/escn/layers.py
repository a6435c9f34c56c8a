"""Equivariant building blocks of the escn backbone.

Features are [..., K, S, C]: K = (lmax+1)^2 real-SH components (l-major, index l^2 + l + m,
or m-major inside the SO(2) layers), S parity sectors, C channels. With `parity="o3"` there
are two sectors, labelled by q = p * (-1)^l: sector 0 holds "natural" irreps (q = +1: scalars,
vectors, rank-2 tensors, ...), sector 1 "unnatural" ones (q = -1: pseudo-scalars, axial
vectors, ...). Every layer below is written so that it maps sector to sector as O(3) allows:

* channel mixing within one l (`SO3Linear`) and m = 0 / "real" SO(2) weights keep q;
* the "imaginary" SO(2) weights (which mix +m and -m, the source of cross products) flip q,
  because in the edge frame a mirror through the edge axis acts on degree-l components
  as q * (+1 for m >= 0, -1 for m < 0);
* biases, SiLU and gate logits act on q = +1 scalars only.

With `parity="so3"` there is one sector and no constraint (the original eSCN, SO(3) only).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def l_index(lmax: int) -> list[int]:
    """l of every component in l-major order."""
    return [l for l in range(lmax + 1) for _ in range(2 * l + 1)]


class RadialMLP(nn.Module):
    """Invariant edge function (Linear, LayerNorm, SiLU) x 2, Linear — as in EquiformerV2's RadialFunction."""

    def __init__(self, n_in: int, hidden: int, n_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.SiLU(),
                                 nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def sector_blocks(w: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """Per-sector weights w [S, A, O, B, C] -> one matrix [(A S O), (B S C)] acting on flattened
    [..., B, S, C] features: sector s reads sector s (or the other one if `flip`), zeros elsewhere."""
    s = w.shape[0]
    sel = torch.eye(s, dtype=w.dtype, device=w.device)
    if flip:
        sel = sel.flip(1)
    full = torch.einsum("saobc,st->asobtc", w, sel)
    a, _, o, b, _, c = full.shape
    return full.reshape(a * s * o, b * s * c)


class SO3Linear(nn.Module):
    """Per-degree, per-sector channel mixing (features of equal l only); bias on the q = +1 scalars."""

    def __init__(self, lmax: int, sectors: int, c_in: int, c_out: int, bias: bool = True):
        super().__init__()
        self.lmax, self.sectors, self.c_out = lmax, sectors, c_out
        self.weight = nn.Parameter(torch.randn(lmax + 1, sectors, c_out, c_in) / math.sqrt(c_in))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, s = x.shape[:-3], self.sectors
        blocks = x.reshape(*lead, x.shape[-3], -1).split([2 * l + 1 for l in range(self.lmax + 1)], dim=-2)
        outs = []
        for l, b in enumerate(blocks):
            w = sector_blocks(self.weight[l][:, None, :, None, :])  # [(S O), (S C)]
            y = b @ w.T
            if l == 0 and self.bias is not None:
                y = y + nn.functional.pad(self.bias, (0, (s - 1) * self.c_out))
            outs.append(y)
        return torch.cat(outs, dim=-2).reshape(*lead, x.shape[-3], s, self.c_out)


class EquivariantLayerNorm(nn.Module):
    """Separate norms: LayerNorm over channels for the q = +1 scalars; for everything else one
    RMS norm per node (mean over degrees of the mean square over m and channels, so each l
    counts equally) with a per-(l, sector, channel) scale and no bias or centring."""

    def __init__(self, lmax: int, sectors: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scalar_norm = nn.LayerNorm(channels, eps=eps)
        self.weight = nn.Parameter(torch.ones(lmax + 1, sectors, channels))
        ls = torch.tensor(l_index(lmax))
        avg = torch.zeros(len(ls), lmax + 1, dtype=torch.float64)
        avg[torch.arange(len(ls)), ls] = 1.0 / (2 * ls + 1).to(torch.float64)
        self.register_buffer("avg_over_m", avg, persistent=False)
        self.register_buffer("l_of_k", ls, persistent=False)
        self.n_groups = (lmax + 1) * sectors - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scal = self.scalar_norm(x[..., 0, 0, :])
        ms = x.pow(2).mean(-1)  # [..., K, S]
        per_l = torch.einsum("...ks,kl->...ls", ms, self.avg_over_m.to(x.dtype))
        total = (per_l.sum((-1, -2)) - per_l[..., 0, 0]) / max(self.n_groups, 1)
        out = x * torch.rsqrt(total + self.eps)[..., None, None, None] * self.weight[self.l_of_k]
        out[..., 0, 0, :] = scal  # mul's backward keeps its inputs, not `out`: safe to overwrite
        return out


class GateActivation(nn.Module):
    """SiLU on q = +1 scalars; every other (l, sector, channel) is multiplied by a sigmoid gate.

    `ls` is the degree of each row of the features (l-major or m-major order; row 0 must be the
    l = 0 scalar). Gate logits [..., n_gates(channels)] come from q = +1 scalars computed by the caller.
    """

    def __init__(self, ls: Sequence[int], lmax: int, sectors: int, channels: int):
        super().__init__()
        self.lmax, self.sectors, self.channels = lmax, sectors, channels
        self.register_buffer("rows_l", torch.tensor(list(ls)), persistent=False)

    @staticmethod
    def n_gates(lmax: int, sectors: int, channels: int) -> int:
        return ((lmax + 1) * sectors - 1) * channels

    def forward(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        lead = logits.shape[:-1]
        g = torch.sigmoid(logits).reshape(*lead, -1, self.channels)
        g = torch.cat([g.new_ones(*lead, 1, self.channels), g], dim=-2)
        g = g.reshape(*lead, self.lmax + 1, self.sectors, self.channels).index_select(-3, self.rows_l)
        out = x * g
        out[..., 0, 0, :] = nn.functional.silu(x[..., 0, 0, :])
        return out


class SO2Convolution(nn.Module):
    """eSCN's SO(2) convolution on edge-frame features in m-major order (|m| <= mmax).

    m = 0:  y_0 = W_0 x_0 (+ bias on q = +1)
    m > 0:  y_{-m} = W_r x_{-m} + W_i x_{+m},   y_{+m} = W_r x_{+m} - W_i x_{-m}
    (the real form of a complex product, which commutes with rotations about the edge axis).
    Each W mixes all degrees l >= m of one order m. W_0 and W_r map a sector to itself, W_i
    maps it to the other one (see the module docstring). Inputs may be scaled first by an
    invariant radial vector (one factor per (m, l, channel), shared by +m and -m) and the layer
    can emit `n_extra` O(3)-invariant numbers (gate and attention logits) from the q = +1, m = 0 inputs.
    Each order is one dense matmul on the flattened (l, sector, channel) axis.
    """

    def __init__(self, lmax: int, mmax: int, sectors: int, c_in: int, c_out: int, n_extra: int = 0,
                 bias: bool = True):
        super().__init__()
        self.lmax, self.mmax, self.sectors, self.c_in, self.c_out = lmax, mmax, sectors, c_in, c_out
        self.n_extra = n_extra
        n0 = lmax + 1
        self.w0 = nn.Parameter(torch.randn(sectors, n0, c_out, n0, c_in) / math.sqrt(n0 * c_in))
        self.b0 = nn.Parameter(torch.zeros(n0, c_out)) if bias else None
        self.wr = nn.ParameterList()
        self.wi = nn.ParameterList()
        for m in range(1, mmax + 1):
            nl = lmax - m + 1
            scale = 1.0 / math.sqrt(2 * nl * c_in)
            self.wr.append(nn.Parameter(torch.randn(sectors, nl, c_out, nl, c_in) * scale))
            self.wi.append(nn.Parameter(torch.randn(sectors, nl, c_out, nl, c_in) * scale))
        if n_extra:
            self.w_extra = nn.Parameter(torch.randn(n_extra, n0, c_in) / math.sqrt(n0 * c_in))
            self.b_extra = nn.Parameter(torch.zeros(n_extra))
        #: length of the radial scaling vector this layer expects
        self.n_radial = c_in * sum(lmax - m + 1 for m in range(mmax + 1))

    def _m0_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[(n0 S o) + n_extra, (n0 S c)] and its bias: W_0 per sector, extras read sector 0 only."""
        s, n0 = self.sectors, self.lmax + 1
        w = sector_blocks(self.w0)
        bias = None
        if self.b0 is not None:
            bias = nn.functional.pad(self.b0[:, None, :], (0, 0, 0, s - 1)).reshape(-1)
        if self.n_extra:
            we = nn.functional.pad(self.w_extra[:, :, None, :], (0, 0, 0, s - 1)).reshape(self.n_extra, -1)
            w = torch.cat([w, we], dim=0)
            b0 = bias if bias is not None else w.new_zeros(n0 * s * self.c_out)
            bias = torch.cat([b0, self.b_extra])
        return w, bias

    def forward(self, x: torch.Tensor, radial: torch.Tensor | None = None):
        e, s = x.shape[0], self.sectors
        sizes = [self.lmax + 1] + [2 * (self.lmax - m + 1) for m in range(1, self.mmax + 1)]
        chunks = x.split(sizes, dim=1)
        rad = radial.split([self.c_in * (self.lmax - m + 1) for m in range(self.mmax + 1)], dim=1) \
            if radial is not None else None
        outs = []
        extra = None
        for m, xm in enumerate(chunks):
            nl = self.lmax - m + 1
            if rad is not None:
                xm = xm.reshape(e, -1, nl, s, self.c_in)
                # the factor repeated over (-m, +m) and the sectors by concatenation, not broadcast: the
                # backward of a broadcast multiply reduces over those interleaved axes (a slow strided sum)
                r = rad[m].reshape(e, 1, nl, 1, self.c_in)
                r = torch.cat([r] * s, dim=3) if s > 1 else r
                r = torch.cat([r] * xm.shape[1], dim=1) if xm.shape[1] > 1 else r
                xm = xm * r
            xm = xm.reshape(e, -1)
            if m == 0:
                w, b = self._m0_matrix()
                y = xm @ w.T if b is None else torch.addmm(b, xm, w.T)
                if self.n_extra:
                    y, extra = y.split([y.shape[1] - self.n_extra, self.n_extra], dim=1)
            else:
                wr, wi = sector_blocks(self.wr[m - 1]), sector_blocks(self.wi[m - 1], flip=True)
                w = torch.cat([torch.cat([wr, wi], dim=1), torch.cat([-wi, wr], dim=1)], dim=0)
                y = xm @ w.T
            outs.append(y.reshape(e, -1, s, self.c_out))
        return torch.cat(outs, dim=1), extra


class SmoothLeakyReLU(nn.Module):
    """EquiformerV2's attention activation: f(x) = (1+a)/2 x + (1-a)/2 x (2 sigmoid(x) - 1).

    A smooth LeakyReLU: slope a for x -> -inf, 1 for x -> +inf, (1+a)/2 at 0.
    """

    def __init__(self, negative_slope: float = 0.2):
        super().__init__()
        self.alpha = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1 + self.alpha) * x + 0.5 * (1 - self.alpha) * x * (2 * torch.sigmoid(x) - 1)
