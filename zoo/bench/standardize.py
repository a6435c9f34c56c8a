"""Target standardization for any backbone (`train.standardize: true`).

In the coupled (Wigner-Eckart) basis every block is a direct sum of irreps c_r, r = (slot pair
(a, b), L). With statistics fitted once from the labelled training blocks,

    on-site, element z:         c_r = scale_z[r] * u_r + shift_z[r]   (shift only for L = 0)
    off-site, ordered (zi, zj): c_r = scale_zizj[r] * u_r

where u is what the wrapped backbone outputs (its "standardized" blocks). shift = training mean of
the L = 0 coefficient; scale = root mean square of (c - shift) pooled over the 2L+1 components, so
one number per irrep: a scalar times an irrep and an invariant shift of an L = 0 irrep commute with
every rotation, and equivariance stays exact. Stats of (a, b, L) and of the transposed pair
(b, a, L) are pooled (with the coupling's transposition sign) so a hermitian backbone stays
hermitian. Irreps with no training data (or an RMS below 1e-6 of the global one) get the global
RMS of their kind; padding irreps get scale 1.

`Standardized.forward` returns un-standardized (physical, Hartree) blocks, so evaluate, predict
and every metric see ordinary predictions. The *loss* is computed in standardized units: the
trainer passes (pred, batch) through `standardized_view`, which maps the prediction and the
targets to u, and evaluates the harness loss (or the wrapped backbone's own `loss_terms`) there.
Extra stage terms (band energy, ...) see the physical prediction. Spinful data is refused.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import numpy as np
import torch

from zoo.data.graph import species_index
from zoo.errors import ConfigError
from zoo.models.contract import Backbone, Prediction
from zoo.physics.coupling import WignerEckart, coupling_matrix

#: an irrep whose training RMS is below this fraction of its kind's global RMS takes the global RMS
RMS_FLOOR = 1e-6


def _irrep_tables(we: WignerEckart) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(irrep of each coupled component [D], L of each irrep [R], component of the transposed
    pair with the same M [D], transposition sign of each component [D])."""
    layout = we.layout
    ls = layout.slot_ls
    D = we.irreps.dim
    comp_irrep = np.zeros(D, dtype=np.int64)
    comp_T = np.zeros(D, dtype=np.int64)
    sign = np.zeros(D)
    irrep_L: list[int] = []
    start: dict[tuple[int, int, int], int] = {}
    for (a, b), sl in we.pair_slices.items():
        off = sl.start
        for L in range(abs(ls[a] - ls[b]), ls[a] + ls[b] + 1):
            start[(a, b, L)] = off
            comp_irrep[off:off + 2 * L + 1] = len(irrep_L)
            irrep_L.append(L)
            off += 2 * L + 1
    for (a, b, L), off in start.items():
        la, lb = ls[a], ls[b]
        # coupled components of B^T for (lb, la) against those of B for (la, lb): sigma * identity
        q1, q2 = coupling_matrix(la, lb), coupling_matrix(lb, la)
        c1 = L * L - abs(la - lb) ** 2  # column offset of L inside the pair's coupled vector
        q1L, q2L = q1[:, c1:c1 + 2 * L + 1], q2[:, c1:c1 + 2 * L + 1]
        bt = q1L.reshape(2 * la + 1, 2 * lb + 1, 2 * L + 1).transpose(1, 0, 2).reshape(-1, 2 * L + 1)
        m = q2L.T @ bt
        s = float(m[0, 0])
        if not np.allclose(m, s * np.eye(2 * L + 1), atol=1e-10):  # the 3j permutation symmetry
            raise AssertionError(f"coupling ({la},{lb})->{L} is not sign-symmetric under transposition")
        offT = start[(b, a, L)]
        comp_T[off:off + 2 * L + 1] = offT + np.arange(2 * L + 1)
        sign[off:off + 2 * L + 1] = s
    return comp_irrep, np.asarray(irrep_L), comp_T, sign


class Standardized(Backbone):
    """A backbone whose outputs are standardized targets; forward returns physical blocks (Hartree)."""

    def __init__(self, backbone: Backbone):
        info = backbone.info
        if getattr(info, "spinful", False) or getattr(backbone, "spinful", False):
            raise ConfigError("train.standardize: target standardization supports spinless data only; "
                              "this dataset/backbone is spinful (set standardize: false)")
        super().__init__(info)
        self.backbone = backbone
        # partitioners and the contract read these from the model the harness holds
        self.message_passing_layers = backbone.message_passing_layers
        self.message_flow = backbone.message_flow
        self.hermitian = backbone.hermitian
        self.we = WignerEckart(info.layout)
        comp_irrep, irrep_L, comp_T, sign = _irrep_tables(self.we)
        self.register_buffer("comp_irrep", torch.as_tensor(comp_irrep), persistent=False)
        self.register_buffer("comp_T", torch.as_tensor(comp_T), persistent=False)
        self.register_buffer("comp_sign", torch.as_tensor(sign), persistent=False)
        self.register_buffer("comp_is_scalar", torch.as_tensor(irrep_L[comp_irrep] == 0), persistent=False)
        self.n_irreps = len(irrep_L)
        elements = list(info.elements)
        self.register_buffer("z_index", torch.as_tensor(species_index(elements)), persistent=False)
        ne, D = len(elements), self.we.irreps.dim
        real_node = torch.stack([self.we.pair_mask(z, z) for z in elements])
        real_edge = torch.stack([torch.stack([self.we.pair_mask(a, b) for b in elements]) for a in elements])
        self.register_buffer("real_node", real_node, persistent=False)
        self.register_buffer("real_edge", real_edge, persistent=False)
        # the statistics: saved in the state_dict, so they travel in checkpoints
        self.register_buffer("node_shift", torch.zeros(ne, D, dtype=torch.float64))
        self.register_buffer("node_scale", torch.ones(ne, D, dtype=torch.float64))
        self.register_buffer("edge_scale", torch.ones(ne, ne, D, dtype=torch.float64))

    # -- maps -----------------------------------------------------------------------------
    def _stats(self, z: torch.Tensor, edge_index: torch.Tensor, dtype: torch.dtype):
        zi = self.z_index[z]
        i, j = edge_index
        return (self.node_scale[zi].to(dtype), self.node_shift[zi].to(dtype),
                self.edge_scale[zi[i], zi[j]].to(dtype))

    def unstandardize(self, pred: Prediction, batch) -> Prediction:
        """u (backbone output) -> physical blocks."""
        ns, nh, es = self._stats(batch.z, batch.edge_index, pred.node_blocks.dtype)
        node = self.we.to_blocks(self.we.to_coupled(pred.node_blocks) * ns + nh)
        edge = self.we.to_blocks(self.we.to_coupled(pred.edge_blocks) * es)
        return Prediction(node, edge)

    def standardize(self, node_blocks: torch.Tensor, edge_blocks: torch.Tensor, batch):
        """physical blocks -> u (the inverse of `unstandardize`)."""
        ns, nh, es = self._stats(batch.z, batch.edge_index, node_blocks.dtype)
        node = self.we.to_blocks((self.we.to_coupled(node_blocks) - nh) / ns)
        edge = self.we.to_blocks(self.we.to_coupled(edge_blocks) / es)
        return node, edge

    def standardized_view(self, pred: Prediction, batch):
        """(prediction, batch) in standardized units: what the training loss is computed on."""
        pn, pe = self.standardize(pred.node_blocks, pred.edge_blocks, batch)
        return Prediction(pn, pe), self.standardized_batch(batch)

    def standardized_batch(self, batch):
        """A shallow copy of `batch` whose targets y_node / y_edge are standardized."""
        out = copy.copy(batch)
        out.y_node, out.y_edge = self.standardize(batch.y_node, batch.y_edge, batch)
        return out

    # -- the contract ------------------------------------------------------------------------
    def forward(self, batch) -> Prediction:
        return self.unstandardize(self.backbone(batch), batch)

    def loss_terms(self, pred: Prediction, batch):
        """The wrapped backbone's own loss, on the standardized view (the trainer passes that)."""
        return self.backbone.loss_terms(pred, batch)

    def loss_outer(self, m: torch.Tensor) -> torch.Tensor:
        return self.backbone.loss_outer(m)

    @torch.no_grad()
    def prepare(self, train_graphs: Sequence) -> None:
        """Fit shift and scale from the labelled training blocks, then the backbone's own prepare
        on standardized copies of the graphs."""
        self.fit_statistics(train_graphs)
        dev = self.node_scale.device
        # shallow copies: Data.to() moves in place, and the caller's graphs must stay where they are
        self.backbone.prepare([self.standardized_batch(copy.copy(g).to(dev)).to(g.y_node.device)
                               for g in train_graphs])

    @torch.no_grad()
    def fit_statistics(self, graphs: Sequence) -> None:
        dev = self.node_scale.device
        ne, D = self.node_shift.shape
        R = self.n_irreps
        f64 = torch.float64
        node_sum = torch.zeros(ne, D, dtype=f64, device=dev)
        node_n = torch.zeros(ne, dtype=f64, device=dev)
        coupled = []
        for g in graphs:
            g = copy.copy(g).to(dev)  # Data.to() moves in place; leave the caller's graph alone
            zi = self.z_index[g.z]
            i, j = g.edge_index
            cn = self.we.to_coupled(g.y_node.to(f64))[g.node_label_mask]
            ce = self.we.to_coupled(g.y_edge.to(f64))[g.edge_label_mask]
            zn = zi[g.node_label_mask]
            pair = (zi[i] * ne + zi[j])[g.edge_label_mask]
            node_sum.index_add_(0, zn, cn)
            node_n.index_add_(0, zn, torch.ones_like(zn, dtype=f64))
            coupled.append((zn, cn, pair, ce))
        if not coupled or node_n.sum() == 0:
            raise ConfigError("train.standardize: no labelled training blocks to fit the statistics from")
        sign, T = self.comp_sign.to(f64), self.comp_T
        mean = node_sum / node_n.clamp(min=1)[:, None]
        mean = 0.5 * (mean + sign * mean[:, T])  # pool (a, b) with (b, a): keeps hermiticity exact
        shift = torch.where(self.comp_is_scalar & self.real_node, mean, torch.zeros_like(mean))
        node_sq = torch.zeros(ne, D, dtype=f64, device=dev)
        edge_sq = torch.zeros(ne * ne, D, dtype=f64, device=dev)
        edge_n = torch.zeros(ne * ne, dtype=f64, device=dev)
        for zn, cn, pair, ce in coupled:
            node_sq.index_add_(0, zn, (cn - shift[zn]) ** 2)
            edge_sq.index_add_(0, pair, ce ** 2)
            edge_n.index_add_(0, pair, torch.ones_like(pair, dtype=f64))
        edge_sq, edge_n = edge_sq.reshape(ne, ne, D), edge_n.reshape(ne, ne)
        # pool transposed pairs: node (z; b, a) with (z; a, b), edge (zj, zi; b, a) with (zi, zj; a, b)
        node_sq = node_sq + node_sq[:, T]
        node_cnt = 2.0 * node_n[:, None].expand(ne, D)
        edge_sq = edge_sq + edge_sq.transpose(0, 1)[:, :, T]
        edge_cnt = (edge_n + edge_n.T)[:, :, None].expand(ne, ne, D)
        self.node_shift.copy_(shift)
        self.node_scale.copy_(self._rms(node_sq, node_cnt, self.real_node, R))
        self.edge_scale.copy_(self._rms(edge_sq, edge_cnt, self.real_edge, R))

    def _rms(self, sq: torch.Tensor, cnt: torch.Tensor, real: torch.Tensor, R: int) -> torch.Tensor:
        """Per-irrep RMS expanded to components; fallbacks as in the module docstring."""
        lead = sq.shape[:-1]
        idx = self.comp_irrep.expand(*lead, -1)
        ss = torch.zeros(*lead, R, dtype=sq.dtype, device=sq.device).scatter_add_(-1, idx, sq * real)
        nn = torch.zeros(*lead, R, dtype=sq.dtype, device=sq.device).scatter_add_(-1, idx, cnt * real)
        total_n = nn.sum()
        glob = torch.sqrt(ss.sum() / total_n) if total_n > 0 else torch.ones((), dtype=sq.dtype, device=sq.device)
        if not glob > 0:
            glob = torch.ones_like(glob)
        rms = torch.sqrt(ss / nn.clamp(min=1))
        rms = torch.where((nn > 0) & (rms > RMS_FLOOR * glob), rms, glob)
        return torch.where(real, rms.gather(-1, idx), torch.ones_like(sq))


def for_checkpoint(model: Backbone, meta: Mapping) -> Backbone:
    """The module a `zoo bench` checkpoint's state_dict belongs to: `model` wrapped in `Standardized`
    when the run standardized its targets (`meta["standardize"]`), else `model` itself."""
    return Standardized(model) if meta.get("standardize") else model
