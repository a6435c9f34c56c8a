"""The message-passing pieces: node update with equivariant graph attention, edge update, FFN.

Messages flow along edge_index from row 0 (source j) to row 1 (target i), torch-geometric's
"source_to_target", and are summed at the target; the edge vector of edge (j, i, s) points
from j to i.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import softmax

from zoo.models.escn.layers import GateActivation, RadialMLP, SO2Convolution, SO3Linear, l_index
from zoo.models.escn.rotation import MMajor, from_edge_frame, to_edge_frame


class EdgeSO2Block(nn.Module):
    """[n_a, n_b, e_ab] -> edge frame -> radial scaling -> SO(2) conv -> gate -> SO(2) conv.

    Shared by the node update (which adds attention) and the edge update (which does not).
    Returns the m-major edge-frame output and the invariant attention features (if asked for).
    """

    def __init__(self, lmax: int, mmax: int, sectors: int, channels: int, hidden: int, c_out: int,
                 n_rbf: int, edge_channels: int, n_elements: int, n_alpha: int = 0):
        super().__init__()
        self.mm = MMajor(lmax, mmax)
        m_ls = [l_index(lmax)[k] for k in self._mmajor_components(lmax, mmax)]
        self.n_gates = GateActivation.n_gates(lmax, sectors, hidden)
        self.n_alpha = n_alpha
        self.conv1 = SO2Convolution(lmax, mmax, sectors, 3 * channels, hidden, n_extra=self.n_gates + n_alpha)
        self.gate = GateActivation(m_ls, lmax, sectors, hidden)
        self.conv2 = SO2Convolution(lmax, mmax, sectors, hidden, c_out, bias=False)
        self.emb_src = nn.Embedding(n_elements, edge_channels)
        self.emb_dst = nn.Embedding(n_elements, edge_channels)
        self.radial = RadialMLP(n_rbf + 2 * edge_channels, edge_channels, self.conv1.n_radial)

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
        msg = torch.cat([x_a, x_b, e], dim=-1)
        local = to_edge_frame(msg, wigner, self.mm)
        rad = self.radial(torch.cat([rbf, self.emb_src(z_b), self.emb_dst(z_a)], dim=1))
        h, extra = self.conv1(local, rad)
        gates, alpha = extra.split([self.n_gates, self.n_alpha], dim=1)
        h = self.gate(h, gates)
        out, _ = self.conv2(h)
        return out, alpha


class NodeAttention(nn.Module):
    """Node update: SO(2) message of [n_i, n_j, e_ji], N_heads attention (softmax over the
    edges arriving at i), rotate back, sum at i, per-degree projection to the sphere channels."""

    def __init__(self, lmax: int, mmax: int, sectors: int, channels: int, hidden: int, heads: int,
                 alpha_channels: int, value_channels: int, n_rbf: int, edge_channels: int, n_elements: int):
        super().__init__()
        self.heads, self.alpha_channels, self.value_channels = heads, alpha_channels, value_channels
        self.message = EdgeSO2Block(lmax, mmax, sectors, channels, hidden, heads * value_channels, n_rbf,
                                    edge_channels, n_elements, n_alpha=heads * alpha_channels)
        self.alpha_norm = nn.LayerNorm(alpha_channels)
        self.alpha_act = nn.LeakyReLU(0.2)
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
    """Edge update: the same SO(2) message of [n_i, n_j, e_ij] without attention or aggregation."""

    def __init__(self, lmax: int, mmax: int, sectors: int, channels: int, hidden: int, n_rbf: int,
                 edge_channels: int, n_elements: int):
        super().__init__()
        self.message = EdgeSO2Block(lmax, mmax, sectors, channels, hidden, channels, n_rbf, edge_channels,
                                    n_elements)

    def forward(self, x: torch.Tensor, e: torch.Tensor, wigner, rbf, z, edge_index) -> torch.Tensor:
        i, j = edge_index
        out, _ = self.message(x[i], x[j], e, wigner, rbf, z[i], z[j])
        return from_edge_frame(out, wigner, self.message.mm)


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
