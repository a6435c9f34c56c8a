"""The message-passing pieces: node update with equivariant graph attention, edge update, FFN,
and EquiformerV2's edge-degree embedding.

Messages flow along edge_index from row 0 (source j) to row 1 (target i), torch-geometric's
"source_to_target", and are summed at the target; the edge vector of edge (j, i, s) points
from j to i.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import softmax

from zoo.models.escn.layers import (GateActivation, RadialMLP, SmoothLeakyReLU, SO2Convolution, SO3Linear,
                                    l_index)
from zoo.models.escn.rotation import MMajor, from_edge_frame, to_edge_frame

ATTN_ACTIVATIONS = ("leaky_relu", "smooth_leaky_relu")
EDGE_UPDATES = ("zoo", "seed")


class EdgeSO2Block(nn.Module):
    """[n_a, n_b, e_ab] -> edge frame -> radial scaling -> SO(2) conv -> gate [-> SO(2) conv].

    Shared by the node update (which adds attention) and the edge update (which does not).
    Radial scaling: `m_share_rad=False` gives one invariant factor per (m, l, channel) inside the
    first SO(2) convolution (shared by +m and -m); `m_share_rad=True` (the seed's
    `use_m_share_rad`) one factor per (l, channel), shared by every m and applied in the global
    frame before the rotation (a per-l scalar commutes with the rotation, so "before" is a
    matter of cost, not of result). `second_conv=False` stops after the gate (hidden channels),
    as the seed's edge update does.
    Returns the m-major edge-frame output and the invariant attention features (if asked for).
    """

    def __init__(self, lmax: int, mmax: int, sectors: int, channels: int, hidden: int, c_out: int,
                 n_rbf: int, edge_channels: int, n_elements: int, n_alpha: int = 0, m_share_rad: bool = False,
                 second_conv: bool = True):
        super().__init__()
        self.mm = MMajor(lmax, mmax)
        m_ls = [l_index(lmax)[k] for k in self._mmajor_components(lmax, mmax)]
        self.n_gates = GateActivation.n_gates(lmax, sectors, hidden)
        self.n_alpha = n_alpha
        self.m_share_rad = m_share_rad
        self.c_in = 3 * channels
        self.conv1 = SO2Convolution(lmax, mmax, sectors, self.c_in, hidden, n_extra=self.n_gates + n_alpha)
        self.gate = GateActivation(m_ls, lmax, sectors, hidden)
        self.conv2 = SO2Convolution(lmax, mmax, sectors, hidden, c_out, bias=False) if second_conv else None
        self.emb_src = nn.Embedding(n_elements, edge_channels)
        self.emb_dst = nn.Embedding(n_elements, edge_channels)
        n_radial = (lmax + 1) * self.c_in if m_share_rad else self.conv1.n_radial
        self.radial = RadialMLP(n_rbf + 2 * edge_channels, edge_channels, n_radial)
        self.register_buffer("l_of_k", torch.tensor(l_index(lmax)), persistent=False)

    @staticmethod
    def _mmajor_components(lmax: int, mmax: int) -> list[int]:
        """l-major component index of every m-major row."""
        comps = [l * l + l for l in range(lmax + 1)]
        for m in range(1, mmax + 1):
            comps += [l * l + l - m for l in range(m, lmax + 1)]
            comps += [l * l + l + m for l in range(m, lmax + 1)]
        return comps

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, e: torch.Tensor, wigner: list[torch.Tensor],
                rbf: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor):
        msg = torch.cat([x_a, x_b, e], dim=-1)  # [E, K, S, 3C]
        rad = self.radial(torch.cat([rbf, self.emb_src(z_b), self.emb_dst(z_a)], dim=1))
        if self.m_share_rad:
            # [E, (lmax+1) 3C] -> one factor per (l, channel), repeated over m and both sectors
            rad = rad.reshape(rad.shape[0], -1, self.c_in).index_select(1, self.l_of_k)
            rad = rad[:, :, None, :]
            # repeated over the sectors by concatenation (a broadcast's backward is a slow strided sum)
            msg = msg * (torch.cat([rad] * msg.shape[2], dim=2) if msg.shape[2] > 1 else rad)
            rad = None
        local = to_edge_frame(msg, wigner, self.mm)
        h, extra = self.conv1(local, rad)
        gates, alpha = extra.split([self.n_gates, self.n_alpha], dim=1)
        h = self.gate(h, gates)
        if self.conv2 is not None:
            h, _ = self.conv2(h)
        return h, alpha


class NodeAttention(nn.Module):
    """Node update: SO(2) message of [n_i, n_j, e_ji], N_heads attention (softmax over the
    edges arriving at i), rotate back, sum at i, per-degree projection to the sphere channels.

    Attention logits: LayerNorm, then `attn_activation` ("leaky_relu", slope 0.2, or
    "smooth_leaky_relu", EquiformerV2's and the seed's), then a per-head dot product.
    """

    def __init__(self, lmax: int, mmax: int, sectors: int, channels: int, hidden: int, heads: int,
                 alpha_channels: int, value_channels: int, n_rbf: int, edge_channels: int, n_elements: int,
                 m_share_rad: bool = False, attn_activation: str = "leaky_relu"):
        super().__init__()
        self.heads, self.alpha_channels, self.value_channels = heads, alpha_channels, value_channels
        self.message = EdgeSO2Block(lmax, mmax, sectors, channels, hidden, heads * value_channels, n_rbf,
                                    edge_channels, n_elements, n_alpha=heads * alpha_channels,
                                    m_share_rad=m_share_rad)
        self.alpha_norm = nn.LayerNorm(alpha_channels)
        self.alpha_act = SmoothLeakyReLU(0.2) if attn_activation == "smooth_leaky_relu" else nn.LeakyReLU(0.2)
        self.alpha_dot = nn.Parameter(torch.randn(heads, alpha_channels) / alpha_channels ** 0.5)
        self.proj = SO3Linear(lmax, sectors, heads * value_channels, channels)

    def forward(self, x: torch.Tensor, e: torch.Tensor, wigner, rbf, z, edge_index) -> torch.Tensor:
        src, dst = edge_index
        n, k, s = x.shape[0], x.shape[1], x.shape[2]
        val, a = self.message(x[dst], x[src], e, wigner, rbf, z[dst], z[src])
        a = self.alpha_act(self.alpha_norm(a.reshape(-1, self.heads, self.alpha_channels)))
        logits = (a * self.alpha_dot).sum(-1)  # [E, heads]
        att = softmax(logits, dst, num_nodes=n)
        ne, rows = val.shape[0], val.shape[1]
        val = (val.reshape(ne, rows, s, self.heads, self.value_channels) * att[:, None, None, :, None])
        glob = from_edge_frame(val.reshape(ne, rows, s, -1), wigner, self.message.mm)
        agg = glob.new_zeros(n, k, s, glob.shape[-1]).index_add(0, dst, glob)
        return self.proj(agg)


class EdgeUpdate(nn.Module):
    """Edge update: the SO(2) message of [n_i, n_j, e_ij] without attention or aggregation.

    mode "zoo": SO(2) conv -> gate -> SO(2) conv to the sphere channels -> rotate back.
    mode "seed" (the seed's SO2EdgeUpdate): SO(2) conv -> gate -> rotate back -> per-degree
    linear projection from the hidden to the sphere channels.
    """

    def __init__(self, lmax: int, mmax: int, sectors: int, channels: int, hidden: int, n_rbf: int,
                 edge_channels: int, n_elements: int, m_share_rad: bool = False, mode: str = "zoo"):
        super().__init__()
        seed = mode == "seed"
        self.message = EdgeSO2Block(lmax, mmax, sectors, channels, hidden, channels, n_rbf, edge_channels,
                                    n_elements, m_share_rad=m_share_rad, second_conv=not seed)
        self.proj = SO3Linear(lmax, sectors, hidden, channels) if seed else None

    def forward(self, x: torch.Tensor, e: torch.Tensor, wigner, rbf, z, edge_index) -> torch.Tensor:
        i, j = edge_index
        out, _ = self.message(x[i], x[j], e, wigner, rbf, z[i], z[j])
        out = from_edge_frame(out, wigner, self.message.mm)
        return out if self.proj is None else self.proj(out)


class EdgeDegreeEmbedding(nn.Module):
    """EquiformerV2's edge-degree embedding: x_i += (1/s) sum_{j->i} D(R_ji) [f_l(r_ji, Z_j, Z_i) delta_m0].

    An invariant radial MLP gives, per edge, the m = 0 coefficients of every degree l in the edge
    frame (q = +1 sector only: m = 0 components are mirror-even, so this is the natural-parity
    sum of f_l(r) Y_l(r_hat) over neighbours); rotated back and summed at the target, divided by
    a fixed `rescale` (EquiformerV2: the average degree). It is one more hop of message passing.
    """

    def __init__(self, lmax: int, mmax: int, sectors: int, channels: int, n_rbf: int, edge_channels: int,
                 n_elements: int, rescale: float):
        super().__init__()
        self.lmax, self.sectors, self.channels, self.rescale = lmax, sectors, channels, float(rescale)
        self.mm = MMajor(lmax, mmax)
        self.emb_src = nn.Embedding(n_elements, edge_channels)
        self.emb_dst = nn.Embedding(n_elements, edge_channels)
        self.radial = RadialMLP(n_rbf + 2 * edge_channels, edge_channels, (lmax + 1) * channels)

    def forward(self, n_nodes: int, wigner, rbf: torch.Tensor, z: torch.Tensor, edge_index: torch.Tensor):
        src, dst = edge_index
        m0 = self.radial(torch.cat([rbf, self.emb_src(z[src]), self.emb_dst(z[dst])], dim=1))
        e = m0.shape[0]
        # m-major rows start with m = 0 for l = 0..lmax; every other row and the q = -1 sector stay zero
        local = nn.functional.pad(m0.reshape(e, self.lmax + 1, 1, self.channels),
                                  (0, 0, 0, self.sectors - 1, 0, self.mm.size - self.lmax - 1))
        glob = from_edge_frame(local, wigner, self.mm)
        out = glob.new_zeros(n_nodes, *glob.shape[1:]).index_add(0, dst, glob)
        return out / self.rescale


class FeedForward(nn.Module):
    """Per-degree linear -> gate (logits from the q = +1 scalars) -> per-degree linear."""

    def __init__(self, lmax: int, sectors: int, channels: int, hidden: int):
        super().__init__()
        self.lin1 = SO3Linear(lmax, sectors, channels, hidden)
        self.gate_logits = nn.Linear(channels, GateActivation.n_gates(lmax, sectors, hidden))
        self.gate = GateActivation(l_index(lmax), lmax, sectors, hidden)
        self.lin2 = SO3Linear(lmax, sectors, hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.gate(self.lin1(x), self.gate_logits(x[..., 0, 0, :])))
