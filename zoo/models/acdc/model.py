"""`acdc`: GEARS H-style atom-centred density correlations (see README.md).

    y_2(i)   = sum_{j: r_ij < rc} Y_l(r_ij) cos(k pi r_ij / rc) f_c(r_ij) [Linear(Emb(Z_j))]_k
    y_(k+1)  = TensorDense(y_k)                       (body orders 2, 3 (, 5)), k < N_TD
    a_i      = concat_k NonlinearBlock_k(y_k)         [N, 2, 25, K + 12 N_TD]
    b_ij     = FusedTensor(Dense(basis(r_ij)), NonlinearBlock(a_i + a_j))    directed pairs
    node irreps = ScaleShift_on(Readout_on(Dense(a_i))),  edge irreps = ScaleShift_off(Readout_off(Dense(b_ij)))
    blocks   = WignerEckart.to_blocks(packed irreps)

There is no message passing between descriptors, but the density y_2 is a sum over each atom's
neighbours and an edge reads both endpoints' descriptors: for partitioning this is one hop
(`message_passing_layers = 1`, summed at edge_index row 0, "target_to_source").
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from zoo.data.torch_data import DatasetInfo, block_masks, edge_vectors, graph_index
from zoo.errors import ConfigError
from zoo.models.acdc.descriptor import AtomCentred, BondCentred, ResidualDense, SpeciesAwareRadialBasis
from zoo.models.acdc.irreps import TensorDense
from zoo.models.acdc.readout import ReadoutPacking, fit_scale_shift
from zoo.models.contract import Backbone, Prediction
from zoo.models.registry import register_model
from zoo.physics.coupling import WignerEckart

TENSORS = ("fused", "full")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(f"acdc: {msg}")


@register_model("acdc")
class ACDC(Backbone):
    """GEARS H: species-aware radial basis, TensorDense density correlations, bond-centred
    FusedTensor features, one residual dense block for atoms and bonds, scale-shifted readouts.

    Hyper-parameters:
        cutoff                 radial cutoff of both bases (default: the dataset cutoff; may not exceed it)
        num_radial             cosines k = 0..num_radial-1 (24)
        max_degree             degree of the spherical harmonics, descriptors and products (4)
        embedding_features     species embedding width (32)
        max_z                  rows of the species embedding (83: gears_h's Z <= 82)
        num_tensordenses       N_TD, TensorDense products after the two-body density (1 or 2)
        tensordense_features   features of each product (12)
        tensor                 "fused" (e3x FusedTensor, the paper) or "full" (all CG paths)
        readout_tensor         product of the readouts: "full" (gears_h) or "fused" (~9x cheaper per
                               feature; the `cpu` preset's deviation)
        mlp_widths             residual dense block widths (32, 16, 32)
        global_mean            centre the norm's scalars over the whole structure (gears_h code;
                               non-local) instead of per row (default, strictly local)
        offdiag_weight         weight of the off-site terms in the loss (4)
        bond_fraction          fraction of labelled pairs kept by each training loss call (gears_h 0.3)
        shift_fit_maxiter      dual_annealing iterations per off-site shift fit (1000 = scipy default)
    """

    message_passing_layers = 1
    message_flow = "target_to_source"
    spinful = False
    hermitian = False

    def __init__(self, info: DatasetInfo, *, cutoff: float | None = None, num_radial: int = 24, max_degree: int = 4,
                 embedding_features: int = 32, max_z: int = 83, num_tensordenses: int = 1,
                 tensordense_features: int = 12, tensor: str = "fused", readout_tensor: str = "full",
                 mlp_widths: tuple[int, ...] = (32, 16, 32),
                 global_mean: bool = False, offdiag_weight: float = 4.0, bond_fraction: float = 1.0,
                 shift_fit_maxiter: int = 1000):
        super().__init__(info)
        _check(not info.spinful, "spinful (SOC) datasets are not supported by this backbone")
        rc = float(info.cutoff if cutoff is None else cutoff)
        _check(0 < rc <= info.cutoff + 1e-9,
               f"cutoff={rc} must be positive and at most the dataset cutoff {info.cutoff} "
               "(the graph has no longer pairs)")
        for name, v in [("num_radial", num_radial), ("max_degree", max_degree),
                        ("embedding_features", embedding_features), ("tensordense_features", tensordense_features),
                        ("shift_fit_maxiter", shift_fit_maxiter)]:
            _check(isinstance(v, int) and v >= 1, f"{name}={v!r} must be a positive integer")
        _check(isinstance(num_tensordenses, int) and num_tensordenses >= 0,
               f"num_tensordenses={num_tensordenses!r} must be a non-negative integer")
        _check(tensor in TENSORS, f"tensor={tensor!r} must be one of {TENSORS}")
        _check(readout_tensor in TENSORS, f"readout_tensor={readout_tensor!r} must be one of {TENSORS}")
        widths = tuple(int(w) for w in mlp_widths)
        _check(len(widths) >= 1 and all(w >= 1 for w in widths), f"mlp_widths={mlp_widths!r} must be positive integers")
        _check(len(widths) == 1 or widths[0] == widths[-1],
               f"mlp_widths={mlp_widths!r}: the residual w*y0 + y needs the first and last widths equal")
        _check(max(info.elements) < max_z, f"max_z={max_z} is too small for element Z={max(info.elements)}")
        _check(0.0 < bond_fraction <= 1.0, f"bond_fraction={bond_fraction} must be in (0, 1]")
        _check(offdiag_weight > 0, f"offdiag_weight={offdiag_weight} must be positive")
        lmax_basis = max(info.layout.slot_ls)
        self.we = WignerEckart(info.layout)
        self.packing = ReadoutPacking(self.we)
        _check(self.packing.lmax <= 2 * max_degree,
               f"max_degree={max_degree} is too small: blocks of l={lmax_basis} shells need irreps up to "
               f"L={2 * lmax_basis} from products of degree-{max_degree} features")
        self.cutoff, self.global_mean = rc, bool(global_mean)
        self.offdiag_weight, self.bond_fraction = float(offdiag_weight), float(bond_fraction)
        self.shift_fit_maxiter = int(shift_fit_maxiter)

        elements = list(info.elements)
        self.register_buffer("z_index", torch.full((max(elements) + 1,), -1, dtype=torch.long), persistent=False)
        self.z_index[torch.tensor(elements)] = torch.arange(len(elements))

        radial = SpeciesAwareRadialBasis(rc, num_radial, max_degree, embedding_features, max_z)
        self.atom = AtomCentred(radial, num_tensordenses, tensordense_features, max_degree, tensor, self.global_mean)
        f = self.atom.features
        self.bond = BondCentred(f, max_degree, rc, num_radial, max_degree, tensor, self.global_mean)
        self.dense = ResidualDense(2, max_degree, f, widths)
        lr = self.packing.lmax
        self.readout_on = TensorDense(2, max_degree, self.dense.features, self.packing.features, lr, readout_tensor)
        self.readout_off = TensorDense(2, max_degree, self.dense.features, self.packing.features, lr, readout_tensor)
        self.register_buffer("gather", self.packing.gather, persistent=False)

        n_el, nf = len(elements), self.packing.features
        # scale-shift constants (prepare); identity until fitted, saved with the checkpoint
        self.register_buffer("on_shift", torch.zeros(n_el, nf))
        self.register_buffer("on_scale", torch.ones(n_el, nf))
        self.register_buffer("off_a", torch.zeros(n_el, n_el, nf))
        self.register_buffer("off_l", torch.ones(n_el, n_el, nf))
        self.register_buffer("off_b", torch.ones(n_el, n_el, nf))
        # training loss calls so far: seeds the bond_fraction draw (checkpointed: resume is exact)
        self.register_buffer("loss_calls", torch.zeros((), dtype=torch.long))

    # -- forward -------------------------------------------------------------------------------
    def irreps(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale-shifted readouts [N, 2, (Lr+1)^2, F_r] (atoms) and [E, ...] (directed pairs)."""
        z = self.z_index[batch.z]
        vec = edge_vectors(batch)
        dist = vec.norm(dim=1)
        i, j = batch.edge_index
        gnode = graph_index(batch) if self.global_mean else None
        gedge = gnode[i] if gnode is not None else None
        a = self.atom(vec, dist, batch.z, batch.edge_index, batch.num_nodes, gnode)
        b = self.bond(a, vec, dist, batch.edge_index, gedge)
        on = self.readout_on(self.dense(a))
        off = self.readout_off(self.dense(b))
        # scale-shift of the even scalars, through a one-hot (0, 0) mask so no in-place edits
        e0 = on.new_zeros(on.shape[1], on.shape[2], 1)
        e0[0, 0] = 1.0
        on_scale = self.on_scale.abs().to(on.dtype)[z][:, None, None, :]
        on = on * (1 + e0 * (on_scale - 1)) + e0 * self.on_shift.to(on.dtype)[z][:, None, None, :]
        la, ll, lb = (t.to(off.dtype)[z[i], z[j]] for t in (self.off_a, self.off_l, self.off_b))
        shift = la * torch.exp(-(dist[:, None] / ll) ** lb)
        off = off + e0 * shift[:, None, None, :]
        return on, off

    def forward(self, batch) -> Prediction:
        on, off = self.irreps(batch)
        node = self.we.to_blocks(on.reshape(on.shape[0], -1)[:, self.gather])
        edge = self.we.to_blocks(off.reshape(off.shape[0], -1)[:, self.gather])
        return Prediction(node, edge)

    # -- contract v2 hooks ---------------------------------------------------------------------
    def loss_terms(self, pred: Prediction, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared errors and counts of on-site and off-site entries: ([S_on, S_off], [C_on, C_off]).

        Over real orbitals of labelled blocks; the Wigner-Eckart map is orthonormal, so these equal
        gears_h's masked irreps sums. With bond_fraction < 1 (training only), each call keeps a
        pseudo-random fraction of the labelled pairs, drawn from a counter of training calls and
        the batch size (deterministic, and restored from the checkpoint on resume).
        """
        nm, em = block_masks(batch)
        nm = nm & batch.node_label_mask[:, None, None]
        em = em & batch.edge_label_mask[:, None, None]
        if self.training and self.bond_fraction < 1.0:
            key = f"{int(self.loss_calls)}:{batch.num_nodes}:{batch.edge_index.shape[1]}".encode()
            gen = torch.Generator().manual_seed(zlib.crc32(key))
            keep = torch.rand(batch.edge_index.shape[1], generator=gen) < self.bond_fraction
            em = em & keep.to(em.device)[:, None, None]
            self.loss_calls += 1
        d_on = (pred.node_blocks - batch.y_node).abs() ** 2
        d_off = (pred.edge_blocks - batch.y_edge).abs() ** 2
        s = torch.stack([d_on[nm].sum(), d_off[em].sum()])
        c = torch.stack([nm.sum(), em.sum()]).to(s.dtype)
        return s, c

    def loss_outer(self, m: torch.Tensor) -> torch.Tensor:
        """gears_h weighted_mse_and_rmse on m = [MSE_on, MSE_off]:

            5 * 1/2 [ (MSE_on + w MSE_off)/(1 + w) + (RMSE_on + w RMSE_off)/(1 + w) ],  w = offdiag_weight
        """
        w = torch.tensor([1.0, self.offdiag_weight], dtype=m.dtype, device=m.device)
        mse = (w * m).sum() / w.sum()
        # the clamp keeps the gradient of sqrt finite when a term is exactly zero
        rmse = (w * torch.sqrt(m.clamp_min(torch.finfo(m.dtype).tiny))).sum() / w.sum()
        return 5.0 * 0.5 * (mse + rmse)

    def prepare(self, train_graphs) -> None:
        """Fit the scale-shift constants (gears_h analyze) from the labelled training blocks."""
        graphs = list(train_graphs)
        if not graphs:
            return
        fit = fit_scale_shift(graphs, self.we, self.packing, self.z_index.cpu(),
                              lambda g: edge_vectors(g).norm(dim=1), maxiter=self.shift_fit_maxiter)
        for name, arr in fit.items():
            buf = getattr(self, name)
            buf.copy_(torch.as_tensor(np.asarray(arr), dtype=buf.dtype, device=buf.device))
