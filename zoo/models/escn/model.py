"""`escn`: augmented-partition eSCN / EquiformerV2 backbone for Hamiltonian blocks (see README.md).

    x_i^0 = [emb(Z_i), 0, ...]          e_ij^0 = [W rbf(|r_ij|), 0, ...]       ([K, S, C] each)
    (options: x_i^0 += EdgeDegreeEmbedding;  e_ij^0 += OverlapEmbedding(S_ij irreps))
    for each of num_layers layers:
        x <- x + NodeAttention(norm(x), norm(e))     (SO(2) messages of [n_i, n_j, e_ji], attention)
        x <- x + FFN(norm(x))
        e <- e + EdgeUpdate(norm(x), norm(e))        (SO(2) messages of [n_i, n_j, e_ij])
        e <- e + FFN(norm(e))
    node irreps = head(norm(x)),  edge irreps = head(norm(e))  ->  WignerEckart.to_blocks
    (norm_both_streams=False, the seed: the stream not being updated enters un-normed;
     final_norm=False, the seed: the heads read x and e un-normed)
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.data.graph import species_index
from zoo.data.torch_data import DatasetInfo, block_masks, edge_vectors
from zoo.errors import ConfigError, ModelError
from zoo.models.contract import Backbone, Prediction
from zoo.models.escn.blocks import (ATTN_ACTIVATIONS, EDGE_UPDATES, EdgeDegreeEmbedding, EdgeUpdate, FeedForward,
                                    NodeAttention)
from zoo.models.escn.layers import EquivariantLayerNorm
from zoo.models.escn.prior import OnsitePrior
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


class OverlapEmbedding(nn.Module):
    """Coupled irreps of an overlap block S_ij [E, irreps.dim] -> edge features [E, K, S, C].

    The Wigner-Eckart irreps of S (one (L, p) per shell pair and L) are mixed per degree L into
    the sphere channels, each into sector q = p (-1)^L ("o3"; the only sector in "so3"), as the
    seed's e3nn Linear from the S irreps to the sphere irreps: linear and per-L, so equivariant.
    """

    def __init__(self, irreps, lmax: int, sectors: int, channels: int):
        super().__init__()
        self.lmax, self.sectors, self.channels = lmax, sectors, channels
        offsets, off = [], 0
        for _, ir in irreps:
            offsets.append(off)
            off += ir.dim
        groups: dict[tuple[int, int], list[int]] = {}
        for k, (_, ir) in enumerate(irreps):
            q = 0 if (sectors == 1 or ir.p * (-1) ** ir.l == 1) else 1
            groups.setdefault((ir.l, q), []).append(k)
        self.keys = sorted(groups)
        self.weights = nn.ParameterList()
        for i, (L, q) in enumerate(self.keys):
            ks = groups[(L, q)]
            idx = torch.tensor([[offsets[k] + m for k in ks] for m in range(2 * L + 1)], dtype=torch.long)
            self.register_buffer(f"idx{i}", idx, persistent=False)  # [2L+1, n_irreps]
            self.weights.append(nn.Parameter(torch.randn(len(ks), channels) / len(ks) ** 0.5))

    def forward(self, coupled: torch.Tensor) -> torch.Tensor:
        out = coupled.new_zeros(coupled.shape[0], (self.lmax + 1) ** 2, self.sectors, self.channels)
        for i, ((L, q), w) in enumerate(zip(self.keys, self.weights)):
            out[:, L * L:(L + 1) ** 2, q, :] = coupled[:, getattr(self, f"idx{i}")] @ w
        return out


class _Layer(nn.Module):
    def __init__(self, lmax, mmax, sectors, channels, hidden, heads, alpha_channels, value_channels, ffn,
                 n_rbf, edge_channels, n_elements, m_share_rad=False, attn_activation="leaky_relu",
                 edge_update="zoo", norm_both_streams=True):
        super().__init__()
        self.norm_both_streams = norm_both_streams
        # module creation order is that of the original layer, so default options keep the same init
        self.norm_x1 = EquivariantLayerNorm(lmax, sectors, channels)
        if norm_both_streams:
            self.norm_e1 = EquivariantLayerNorm(lmax, sectors, channels)
        self.attn = NodeAttention(lmax, mmax, sectors, channels, hidden, heads, alpha_channels, value_channels,
                                  n_rbf, edge_channels, n_elements, m_share_rad=m_share_rad,
                                  attn_activation=attn_activation)
        self.norm_x2 = EquivariantLayerNorm(lmax, sectors, channels)
        self.ffn_x = FeedForward(lmax, sectors, channels, ffn)
        if norm_both_streams:
            self.norm_x3 = EquivariantLayerNorm(lmax, sectors, channels)
        self.norm_e2 = EquivariantLayerNorm(lmax, sectors, channels)
        self.edge = EdgeUpdate(lmax, mmax, sectors, channels, hidden, n_rbf, edge_channels, n_elements,
                               m_share_rad=m_share_rad, mode=edge_update)
        self.norm_e3 = EquivariantLayerNorm(lmax, sectors, channels)
        self.ffn_e = FeedForward(lmax, sectors, channels, ffn)

    def forward(self, x, e, wigner, rbf, z, edge_index):
        both = self.norm_both_streams
        x = x + self.attn(self.norm_x1(x), self.norm_e1(e) if both else e, wigner, rbf, z, edge_index)
        x = x + self.ffn_x(self.norm_x2(x))
        e = e + self.edge(self.norm_x3(x) if both else x, self.norm_e2(e), wigner, rbf, z, edge_index)
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
                           [0, rbf_stop]; EquiformerV2 and the seed use 2.0)
        rbf_stop           last Gaussian centre in A (default: the dataset cutoff; the seed: 13.0)
        parity             "o3" (default; exact under inversion, tracks pseudo-tensors) or "so3"
                           (one sector, the original eSCN: rotations only)
    Seed choices (README "Faithful"/"Different"; the `paper` presets set the seed's value):
        m_share_rad        True: one radial factor per (l, channel) shared across m, before the
                           rotation (seed); False: one per (m, l, channel) inside the SO(2) conv
        edge_update        "seed": SO(2) conv, gate, rotate back, per-degree projection;
                           "zoo": SO(2) conv, gate, SO(2) conv, rotate back
        attn_activation    "smooth_leaky_relu" (seed, EquiformerV2) or "leaky_relu"
        norm_both_streams  False (seed): pre-norm only the stream being updated; True: both
        use_overlap        add the overlap block S_ij (its coupled irreps, mixed per L) to the
                           initial edge features; needs a dataset with S (seed option, off there too)
        edge_degree_embedding  EquiformerV2's edge-degree embedding of the initial node features
                           (one more hop: message_passing_layers = num_layers + 1)
        edge_degree_rescale    its divisor (EquiformerV2: the average degree)
        final_norm         True: layer-norm the features before the output heads; False (seed):
                           the heads read the residual stream as it is
        head_init_scale    std scale of the output heads' weights (zoo 0.01; the seed's e3nn
                           Linear is unit-variance, 1.0)
    On-site learning (issue 18; README "Nodes"; zoo additions, not in the seed):
        node_prior         add a closed-form equivariant on-site prior (zoo.models.escn.prior):
                           per-element ridge map from species-resolved two-body irreps
                           sum_j g_n(r_ij) Y_LM(r_ij) to the on-site irreps, fitted in `prepare`;
                           the network learns the residual
        node_prior_rbf, node_prior_ridge  its Gaussians per species and relative ridge strength
        node_loss_weight   None: the harness loss (train: loss, offdiag_weight); w in (0, 1): the
                           model's own loss w * MSE(on-site entries) + (1 - w) * MSE(off-site
                           entries), each a mean over its own labelled entries (nodes are ~3 % of
                           the entries of a periodic cell, so the plain MSE barely sees them)
    """

    def __init__(self, info: DatasetInfo, *, sphere_channels: int = 16, lmax: int | None = None,
                 mmax: int | None = None, num_layers: int = 1, num_heads: int = 2, attn_hidden_channels: int = 16,
                 attn_alpha_channels: int = 16, attn_value_channels: int = 8, ffn_hidden_channels: int = 64,
                 edge_channels: int = 32, num_rbf: int = 32, rbf_width_scale: float = 1.0, parity: str = "o3",
                 rbf_stop: float | None = None,
                 m_share_rad: bool = False, edge_update: str = "zoo", attn_activation: str = "leaky_relu",
                 norm_both_streams: bool = True, use_overlap: bool = False, edge_degree_embedding: bool = False,
                 edge_degree_rescale: float = 16.0, head_init_scale: float = 0.01, final_norm: bool = True,
                 node_prior: bool = False, node_prior_rbf: int = 16, node_prior_ridge: float = 1e-5,
                 node_loss_weight: float | None = None):
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
        _check(rbf_stop is None or (isinstance(rbf_stop, (int, float)) and rbf_stop > 0),
               f"rbf_stop={rbf_stop!r} must be a positive number (A) or null for the cutoff")
        _check(edge_update in EDGE_UPDATES, f"edge_update={edge_update!r} must be one of {EDGE_UPDATES}")
        _check(attn_activation in ATTN_ACTIVATIONS,
               f"attn_activation={attn_activation!r} must be one of {ATTN_ACTIVATIONS}")
        for name, v in [("m_share_rad", m_share_rad), ("norm_both_streams", norm_both_streams),
                        ("use_overlap", use_overlap), ("edge_degree_embedding", edge_degree_embedding),
                        ("final_norm", final_norm), ("node_prior", node_prior)]:
            _check(isinstance(v, bool), f"{name}={v!r} must be true or false")
        for name, v in [("edge_degree_rescale", edge_degree_rescale), ("head_init_scale", head_init_scale)]:
            _check(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                   f"{name}={v!r} must be a positive number")
        _check(isinstance(node_prior_rbf, int) and node_prior_rbf >= 1,
               f"node_prior_rbf={node_prior_rbf!r} must be a positive integer")
        _check(isinstance(node_prior_ridge, (int, float)) and node_prior_ridge >= 0,
               f"node_prior_ridge={node_prior_ridge!r} must be a number >= 0")
        _check(node_loss_weight is None or (isinstance(node_loss_weight, (int, float))
                                            and not isinstance(node_loss_weight, bool) and 0 < node_loss_weight < 1),
               f"node_loss_weight={node_loss_weight!r} must be null or a number in (0, 1)")
        self.node_loss_weight = None if node_loss_weight is None else float(node_loss_weight)
        if use_overlap and not info.has_overlap:
            raise ConfigError(f"escn: use_overlap=true needs the overlap matrix S as an edge input, but dataset "
                              f"{info.name or '(unnamed)'!r} has no S (its card says has_overlap: false)")
        self.lmax, self.mmax, self.parity = lmax, mmax, parity
        self.rbf_width_scale = float(rbf_width_scale)
        self.rbf_stop = float(info.cutoff if rbf_stop is None else rbf_stop)
        self.sectors = 2 if parity == "o3" else 1
        self.channels = sphere_channels
        self.num_rbf = num_rbf
        self.use_overlap, self.edge_degree_embedding = use_overlap, edge_degree_embedding
        # the edge-degree embedding reads each node's incoming edges once more: one more halo hop
        self.message_passing_layers = num_layers + int(edge_degree_embedding)
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
                   attn_value_channels, ffn_hidden_channels, num_rbf, edge_channels, n_el, m_share_rad=m_share_rad,
                   attn_activation=attn_activation, edge_update=edge_update, norm_both_streams=norm_both_streams)
            for _ in range(num_layers))
        if final_norm:
            self.norm_node = EquivariantLayerNorm(lmax, self.sectors, sphere_channels)
            self.norm_edge = EquivariantLayerNorm(lmax, self.sectors, sphere_channels)
        else:
            self.norm_node = self.norm_edge = nn.Identity()
        self.node_head = IrrepHead(self.we.irreps, lmax, self.sectors, sphere_channels, head_init_scale)
        self.edge_head = IrrepHead(self.we.irreps, lmax, self.sectors, sphere_channels, head_init_scale)
        # optional modules last, so that the default options keep the parameter init of a given seed
        self.degree_embedding = EdgeDegreeEmbedding(lmax, mmax, self.sectors, sphere_channels, num_rbf, edge_channels,
                                                    n_el, edge_degree_rescale) if edge_degree_embedding else None
        self.overlap_embedding = OverlapEmbedding(self.we.irreps, lmax, self.sectors,
                                                  sphere_channels) if use_overlap else None
        self.node_prior = OnsitePrior(self.we, n_el, info.cutoff, node_prior_rbf,
                                      node_prior_ridge) if node_prior else None

    def _embed(self, scalars: torch.Tensor) -> torch.Tensor:
        """[M, C] q = +1 scalars -> [M, K, S, C] features that are zero elsewhere."""
        k = (self.lmax + 1) ** 2
        return nn.functional.pad(scalars[:, None, None, :], (0, 0, 0, self.sectors - 1, 0, k - 1))

    def forward(self, batch) -> Prediction:
        z = self.z_index[batch.z]
        vec = edge_vectors(batch)
        dist = vec.norm(dim=1)
        wigner = self.rotation(vec)
        rbf = gaussian(dist, 0.0, self.rbf_stop, self.num_rbf, self.rbf_width_scale)
        x = self._embed(self.atom_embedding(z))
        e = self._embed(self.edge_embedding(rbf))
        if self.degree_embedding is not None:
            x = x + self.degree_embedding(x.shape[0], wigner, rbf, z, batch.edge_index)
        if self.overlap_embedding is not None:
            s_edge = getattr(batch, "s_edge", None)
            if s_edge is None:
                raise ModelError("escn: use_overlap=true needs the overlap blocks S (batch.s_edge) as input, "
                                 "but this graph has none (a bare structure cannot be predicted without S)")
            e = e + self.overlap_embedding(self.we.to_coupled(s_edge.to(e.dtype)))
        for layer in self.layers:
            x, e = layer(x, e, wigner, rbf, z, batch.edge_index)
        node = self.we.to_blocks(self.node_head(self.norm_node(x)))
        edge = self.we.to_blocks(self.edge_head(self.norm_edge(e)))
        if self.node_prior is not None:
            node = node + self.node_prior(batch, z).to(node.dtype)
        return Prediction(node, edge)

    def prepare(self, train_graphs) -> None:
        """Fit the on-site prior (node_prior: true) on the labelled training blocks; else nothing."""
        if self.node_prior is not None:
            self.node_prior.fit(train_graphs, self.z_index)

    def loss_terms(self, pred: Prediction, batch):
        """node_loss_weight set: ([SSE on-site, SSE off-site], [n on-site, n off-site]) over the
        labelled real-orbital entries; else None (the harness loss)."""
        if self.node_loss_weight is None:
            return None
        node_m, edge_m = block_masks(batch)
        node_m = node_m & batch.node_label_mask[:, None, None]
        edge_m = edge_m & batch.edge_label_mask[:, None, None]
        en = (pred.node_blocks - batch.y_node)[node_m]
        ee = (pred.edge_blocks - batch.y_edge)[edge_m]
        sums = torch.stack([(en ** 2).sum(), (ee ** 2).sum()])
        counts = torch.tensor([float(en.numel()), float(ee.numel())], dtype=sums.dtype, device=sums.device)
        return sums, counts

    def loss_outer(self, m: torch.Tensor) -> torch.Tensor:
        """w * m_node + (1 - w) * m_edge for the model-owned loss; identity otherwise."""
        if self.node_loss_weight is None:
            return m
        w = self.node_loss_weight
        return w * m[0] + (1.0 - w) * m[1]
