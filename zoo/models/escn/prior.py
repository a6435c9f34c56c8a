"""Closed-form equivariant on-site prior for `escn` (`node_prior: true`; issue 18, "nodes must learn").

Two-body equivariant density of atom i, resolved by neighbour species s and radial function n:

    F_i[s, n, L, M] = sum_{j in N(i), Z_j = s} g_n(r_ij) fc(r_ij) Y_LM(r_j - r_i)
    F_i[const, 0, 0] = 1                                   (the per-element mean as a column)

(g_n: Gaussians on [0, rc]; fc: cosine cutoff; Y: real spherical harmonics, internal convention,
so F_i[., ., L, :] transforms like an irrep L with parity (-1)^L.) The prior of every on-site
coupled irrep c_r of degree L and parity p = (-1)^L is linear in the features of that degree,

    c_r[M] = sum_f W[Z_i, L][f, r] F_i[f, L, M]        (one weight per feature and irrep, shared by M)

so it rotates exactly like c_r; irreps with p != (-1)^L (pseudo-tensors, zero in a real symmetric
block) get no prior. W is fitted once, per element and degree, by ridge least squares on the
labelled training blocks (`fit`): (A + lam tr(A)/F P) W = B (P = I but 0 for the constant) with A = sum_{i, M} F F^T,
B = sum_{i, M} F c^T. The block is symmetrised, (H + H^T)/2, so hermiticity is exact whatever W.

Locality: the features read the edges that end on atom i (message flow source -> target, as the
eSCN messages), i.e. one hop, within escn's halo of num_layers >= 1.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from zoo.data.torch_data import edge_vectors
from zoo.errors import ModelError
from zoo.physics.coupling import WignerEckart
from zoo.physics.radial import cosine_cutoff, gaussian
from zoo.physics.wigner import spherical_harmonics


class OnsitePrior(nn.Module):
    """Per-element ridge map from species-resolved two-body irreps to the on-site coupled irreps."""

    def __init__(self, we: WignerEckart, n_elements: int, cutoff: float, n_rbf: int = 16, ridge: float = 1e-5):
        super().__init__()
        if n_rbf < 1:
            raise ModelError(f"escn node prior: node_prior_rbf={n_rbf} must be >= 1")
        if not ridge >= 0:
            raise ModelError(f"escn node prior: node_prior_ridge={ridge} must be >= 0")
        self.we, self.n_el, self.cutoff, self.n_rbf, self.ridge = we, n_elements, float(cutoff), n_rbf, float(ridge)
        self.n_feat = n_elements * n_rbf + 1  # + the constant column (L = 0 only)
        offsets, off = [], 0
        for _, ir in we.irreps:
            offsets.append(off)
            off += ir.dim
        comps: dict[int, list[list[int]]] = {}
        for (_, ir), o in zip(we.irreps, offsets):
            if ir.p == (-1) ** ir.l:  # two-body densities are true tensors: no pseudo-tensor prior
                comps.setdefault(ir.l, []).append(list(range(o, o + ir.dim)))
        self.ls = sorted(comps)
        self.lmax = max(self.ls)
        for L in self.ls:
            self.register_buffer(f"idx{L}", torch.tensor(comps[L], dtype=torch.long), persistent=False)  # [k, 2L+1]
            # the fitted weights: saved in the state_dict (checkpoints); zero = no prior until `fit`
            self.register_buffer(f"w{L}", torch.zeros(n_elements, self.n_feat, len(comps[L]), dtype=torch.float64))

    def features(self, batch, z: torch.Tensor) -> torch.Tensor:
        """F [N, n_feat, (lmax+1)^2] of every node of `batch` (z: species index per node)."""
        vec = -edge_vectors(batch)  # r_src - r_dst: the neighbour as seen from the target atom
        src, dst = batch.edge_index
        d = vec.norm(dim=1)
        rad = gaussian(d, 0.0, self.cutoff, self.n_rbf) * cosine_cutoff(d, self.cutoff)[:, None]  # [E, n]
        y = spherical_harmonics(list(range(self.lmax + 1)), vec)  # [E, K]
        n_nodes, K = z.shape[0], (self.lmax + 1) ** 2
        slot = dst * self.n_el + z[src]
        f = vec.new_zeros(n_nodes * self.n_el, self.n_rbf, K).index_add(0, slot, rad[:, :, None] * y[:, None, :])
        const = vec.new_zeros(n_nodes, 1, K)
        const[:, 0, 0] = 1.0
        return torch.cat([f.reshape(n_nodes, self.n_el * self.n_rbf, K), const], dim=1)

    def forward(self, batch, z: torch.Tensor) -> torch.Tensor:
        """Prior on-site blocks [N, n_max, n_max] (symmetric)."""
        feats = self.features(batch, z)
        coupled = feats.new_zeros(z.shape[0], self.we.irreps.dim)
        for L in self.ls:
            w = getattr(self, f"w{L}").to(feats.dtype)[z]  # [N, F, k]
            c = torch.einsum("nfm,nfk->nkm", feats[:, :, L * L:(L + 1) ** 2], w)
            idx = getattr(self, f"idx{L}")
            coupled = coupled.index_copy(1, idx.reshape(-1), c.reshape(z.shape[0], -1))
        block = self.we.to_blocks(coupled)
        return 0.5 * (block + block.transpose(-1, -2))

    @torch.no_grad()
    def fit(self, train_graphs: Iterable, z_index: torch.Tensor) -> None:
        """Ridge fit of W on the labelled on-site blocks (virtual halo atoms skipped)."""
        dev, f64 = z_index.device, torch.float64
        A = {L: torch.zeros(self.n_el, self.n_feat, self.n_feat, dtype=f64, device=dev) for L in self.ls}
        B = {L: torch.zeros(self.n_el, self.n_feat, getattr(self, f"idx{L}").shape[0], dtype=f64, device=dev)
             for L in self.ls}
        seen = False
        for g in train_graphs:
            g = g.clone().to(dev)
            g.pos, g.cell = g.pos.to(f64), g.cell.to(f64)
            z = z_index[g.z]
            if (z < 0).any():
                raise ModelError(f"escn node prior: graph {getattr(g, 'name', '?')!r} holds an element outside "
                                 f"the dataset's layout")
            keep = g.node_label_mask if hasattr(g, "node_label_mask") else torch.ones_like(z, dtype=torch.bool)
            if not keep.any():
                continue
            seen = True
            feats = self.features(g, z)[keep]
            coupled = self.we.to_coupled(g.y_node.to(f64))[keep]
            zk = z[keep]
            for L in self.ls:
                fl = feats[:, :, L * L:(L + 1) ** 2]  # [n, F, 2L+1]
                tl = coupled[:, getattr(self, f"idx{L}")]  # [n, k, 2L+1]
                A[L].index_add_(0, zk, torch.einsum("nfm,ngm->nfg", fl, fl))
                B[L].index_add_(0, zk, torch.einsum("nfm,nkm->nfk", fl, tl))
        if not seen:
            raise ModelError("escn node prior: no labelled training atoms to fit the on-site prior from")
        eye = torch.eye(self.n_feat, dtype=f64, device=dev)
        pen = eye.clone()
        pen[-1, -1] = 0.0  # the constant column (the element mean) is not shrunk
        for L in self.ls:
            a = A[L]
            lam = self.ridge * a.diagonal(dim1=1, dim2=2).sum(-1).clamp(min=1e-30) / self.n_feat
            # features that never occur (absent species, L > 0 constant column) keep weight 0
            w = torch.linalg.solve(a + lam[:, None, None] * pen + 1e-12 * eye, B[L])
            getattr(self, f"w{L}").copy_(w)
