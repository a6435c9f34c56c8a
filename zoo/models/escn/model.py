"""`escn`: augmented-partition eSCN / EquiformerV2 backbone for Hamiltonian blocks (see README.md).

    x_i^0 = [emb(Z_i), 0, ...]          e_ij^0 = [W rbf(|r_ij|), 0, ...]       ([K, S, C] each)
    for each of num_layers layers:
        x <- x + NodeAttention(norm(x), norm(e))     (SO(2) messages of [n_i, n_j, e_ji], attention)
        x <- x + FFN(norm(x))
        e <- e + EdgeUpdate(norm(x), norm(e))        (SO(2) messages of [n_i, n_j, e_ij])
        e <- e + FFN(norm(e))
    node irreps = head(norm(x)),  edge irreps = head(norm(e))  ->  WignerEckart.to_blocks
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.data.graph import species_index
from zoo.data.torch_data import DatasetInfo, edge_vectors
from zoo.errors import ConfigError
from zoo.models.contract import Backbone, Prediction
from zoo.models.escn.blocks import EdgeUpdate, FeedForward, NodeAttention
from zoo.models.escn.layers import EquivariantLayerNorm
from zoo.models.escn.rotation import EdgeRotation
from zoo.models.registry import register_model
from zoo.physics.coupling import WignerEckart
from zoo.physics.radial import gaussian

PARITY_MODES = ("o3", "so3")


class IrrepHead(nn.Module):
    """Linear maps per degree L from the sphere channels to the Wigner-Eckart coupled irreps.

    A coupled irrep (L, p) of a shell pair has p = (-1)^(l1+l2); it is read from the sector
    q = p (-1)^L (sector 1 for pseudo-tensors such as the L = 1 part of a p-p block) in
    "o3" mode, and from the only sector in "so3" mode. Bias on the invariant L = 0, p = +1 irreps.
    """

    def __init__(self, irreps, lmax: int, sectors: int, channels: int, init_scale: float = 0.01):
        super().__init__()
        self.lmax, self.sectors, self.channels = lmax, sectors, channels
        by_l: dict[int, list[int]] = {}
        offsets, off = [], 0
        for k, (_, ir) in enumerate(irreps):
            by_l.setdefault(ir.l, []).append(k)
            offsets.append(off)
            off += ir.dim
        self.dim = off
        self.weights = nn.ParameterList()
        self.ls: list[int] = []
        order: list[int] = []
        bias_pos: list[int] = []
        for L in sorted(by_l):
            ks = by_l[L]
            sel = torch.zeros(sectors, len(ks))
            for col, k in enumerate(ks):
                q = irreps[k][1].p * (-1) ** L
                sel[0 if (q == 1 or sectors == 1) else 1, col] = 1.0
                if L == 0 and irreps[k][1].p == 1:
                    bias_pos.append(len(order) + col)
            self.register_buffer(f"sel{L}", sel, persistent=False)
            # small init: Hamiltonian blocks are O(0.01-1) Ha while the normed features are O(1)
            self.weights.append(nn.Parameter(init_scale * torch.randn(channels, len(ks)) / channels ** 0.5))
            self.ls.append(L)
            # a degree's outputs come out [M, irrep] (row-major): remember where each lands
            order += [offsets[k] + mm for mm in range(2 * L + 1) for k in ks]
        self.register_buffer("perm", torch.argsort(torch.tensor(order)), persistent=False)
        self.register_buffer("bias_pos", torch.tensor(bias_pos, dtype=torch.long), persistent=False)
        self.bias = nn.Parameter(torch.zeros(len(bias_pos)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        blocks = x.reshape(n, x.shape[1], -1).split([2 * l + 1 for l in range(self.lmax + 1)], dim=1)
        parts = []
        for L, w in zip(self.ls, self.weights):
            sel = getattr(self, f"sel{L}").to(w.dtype)
            wfull = torch.einsum("ck,sk->sck", w, sel).reshape(self.sectors * self.channels, -1)
            parts.append((blocks[L] @ wfull).reshape(n, -1))
        flat = torch.cat(parts, dim=1)
        flat = flat.index_add(1, self.bias_pos, self.bias.expand(n, -1))
        return flat[:, self.perm]


class _Layer(nn.Module):
    def __init__(self, lmax, mmax, sectors, channels, hidden, heads, alpha_channels, value_channels, ffn,
                 n_rbf, edge_channels, n_elements):
        super().__init__()
        self.norm_x1 = EquivariantLayerNorm(lmax, sectors, channels)
        self.norm_e1 = EquivariantLayerNorm(lmax, sectors, channels)
        self.attn = NodeAttention(lmax, mmax, sectors, channels, hidden, heads, alpha_channels, value_channels,
                                  n_rbf, edge_channels, n_elements)
        self.norm_x2 = EquivariantLayerNorm(lmax, sectors, channels)
        self.ffn_x = FeedForward(lmax, sectors, channels, ffn)
        self.norm_x3 = EquivariantLayerNorm(lmax, sectors, channels)
        self.norm_e2 = EquivariantLayerNorm(lmax, sectors, channels)
        self.edge = EdgeUpdate(lmax, mmax, sectors, channels, hidden, n_rbf, edge_channels, n_elements)
        self.norm_e3 = EquivariantLayerNorm(lmax, sectors, channels)
        self.ffn_e = FeedForward(lmax, sectors, channels, ffn)

    def forward(self, x, e, wigner, rbf, z, edge_index):
        x = x + self.attn(self.norm_x1(x), self.norm_e1(e), wigner, rbf, z, edge_index)
        x = x + self.ffn_x(self.norm_x2(x))
        e = e + self.edge(self.norm_x3(x), self.norm_e2(e), wigner, rbf, z, edge_index)
        e = e + self.ffn_e(self.norm_e3(e))
        return x, e


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(f"escn: {msg}")


@register_model("escn")
class ESCN(Backbone):
    """eSCN / EquiformerV2-style node + edge message passing with a Wigner-Eckart output head.

    Hyper-parameters (all channel counts are per parity sector):
        sphere_channels    d_sphere, channels of node and edge features
        lmax, mmax         degree of the features (default 2 * largest l of the basis) and the
                           largest |m| kept in the edge frame (default lmax)
        num_layers         message-passing layers (= halo depth for exact partitioning)
        num_heads, attn_hidden_channels, attn_alpha_channels, attn_value_channels
                           graph attention: SO(2) hidden width, attention logit width, value
                           channels per head
        ffn_hidden_channels  d_ffn of the per-degree feed-forward
        edge_channels, num_rbf  radial MLP width and number of distance Gaussians
        rbf_width_scale    Gaussian width sigma = rbf_width_scale * centre spacing (centres on
                           [0, cutoff]; EquiformerV2 uses 2.0)
        parity             "o3" (default; exact under inversion, tracks pseudo-tensors) or "so3"
                           (one sector, the original eSCN: rotations only)
    """

    def __init__(self, info: DatasetInfo, *, sphere_channels: int = 16, lmax: int | None = None,
                 mmax: int | None = None, num_layers: int = 1, num_heads: int = 2, attn_hidden_channels: int = 16,
                 attn_alpha_channels: int = 16, attn_value_channels: int = 8, ffn_hidden_channels: int = 64,
                 edge_channels: int = 32, num_rbf: int = 32, rbf_width_scale: float = 1.0, parity: str = "o3"):
        super().__init__(info)
        if info.spinful:
            raise ConfigError("escn: spinful (SOC) datasets are not supported by this backbone")
        lmax_basis = max(info.layout.slot_ls)
        lmax = 2 * lmax_basis if lmax is None else int(lmax)
        _check(lmax >= max(1, 2 * lmax_basis),
               f"lmax={lmax} is too small: the basis has l={lmax_basis} shells, so blocks need irreps up to "
               f"L={2 * lmax_basis} (lmax >= max(1, {2 * lmax_basis}))")
        mmax = lmax if mmax is None else int(mmax)
        _check(1 <= mmax <= lmax, f"mmax={mmax} must be in 1..lmax={lmax}")
        _check(parity in PARITY_MODES, f"parity={parity!r} must be one of {PARITY_MODES}")
        for name, v in [("sphere_channels", sphere_channels), ("num_layers", num_layers), ("num_heads", num_heads),
                        ("attn_hidden_channels", attn_hidden_channels), ("attn_alpha_channels", attn_alpha_channels),
                        ("attn_value_channels", attn_value_channels), ("ffn_hidden_channels", ffn_hidden_channels),
                        ("edge_channels", edge_channels), ("num_rbf", num_rbf)]:
            _check(isinstance(v, int) and v >= 1, f"{name}={v!r} must be a positive integer")
        _check(isinstance(rbf_width_scale, (int, float)) and rbf_width_scale > 0,
               f"rbf_width_scale={rbf_width_scale!r} must be a positive number")
        self.lmax, self.mmax, self.parity = lmax, mmax, parity
        self.rbf_width_scale = float(rbf_width_scale)
        self.sectors = 2 if parity == "o3" else 1
        self.channels = sphere_channels
        self.num_rbf = num_rbf
        self.message_passing_layers = num_layers
        self.message_flow = "source_to_target"

        elements = list(info.elements)
        self.register_buffer("z_index", torch.as_tensor(species_index(elements)), persistent=False)
        n_el = len(elements)

        self.we = WignerEckart(info.layout)
        self.rotation = EdgeRotation(lmax)
        self.atom_embedding = nn.Embedding(n_el, sphere_channels)
        self.edge_embedding = nn.Linear(num_rbf, sphere_channels)
        self.layers = nn.ModuleList(
            _Layer(lmax, mmax, self.sectors, sphere_channels, attn_hidden_channels, num_heads, attn_alpha_channels,
                   attn_value_channels, ffn_hidden_channels, num_rbf, edge_channels, n_el)
            for _ in range(num_layers))
        self.norm_node = EquivariantLayerNorm(lmax, self.sectors, sphere_channels)
        self.norm_edge = EquivariantLayerNorm(lmax, self.sectors, sphere_channels)
        self.node_head = IrrepHead(self.we.irreps, lmax, self.sectors, sphere_channels)
        self.edge_head = IrrepHead(self.we.irreps, lmax, self.sectors, sphere_channels)

    def _embed(self, scalars: torch.Tensor) -> torch.Tensor:
        """[M, C] q = +1 scalars -> [M, K, S, C] features that are zero elsewhere."""
        k = (self.lmax + 1) ** 2
        return nn.functional.pad(scalars[:, None, None, :], (0, 0, 0, self.sectors - 1, 0, k - 1))

    def forward(self, batch) -> Prediction:
        z = self.z_index[batch.z]
        vec = edge_vectors(batch)
        dist = vec.norm(dim=1)
        wigner = self.rotation(vec)
        rbf = gaussian(dist, 0.0, self.info.cutoff, self.num_rbf, self.rbf_width_scale)
        x = self._embed(self.atom_embedding(z))
        e = self._embed(self.edge_embedding(rbf))
        for layer in self.layers:
            x, e = layer(x, e, wigner, rbf, z, batch.edge_index)
        node = self.we.to_blocks(self.node_head(self.norm_node(x)))
        edge = self.we.to_blocks(self.edge_head(self.norm_edge(e)))
        return Prediction(node, edge)
