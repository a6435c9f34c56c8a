"""GEARS H descriptors: species-aware two-body basis, atom-centred density correlations
(TensorDense products, body order 2, 3 (, 5)), bond-centred features, the shared residual dense
block. Feature arrays follow `zoo.models.acdc.irreps` ([..., P, (L+1)^2, F]).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.models.acdc.irreps import EquiLinear, FusedTensor, FullTensor, IrrepNorm, TensorDense, gated, to_both_parities
from zoo.physics.radial import cosine_basis, smooth_cutoff
from zoo.physics.wigner import spherical_harmonics

# e3x's "orthonormal" real harmonics are zoo's 'component' ones divided by sqrt(4 pi)
_ORTHONORMAL = 1.0 / math.sqrt(4.0 * math.pi)


def basis_expansion(vec: torch.Tensor, dist: torch.Tensor, cutoff: float, num_radial: int,
                    max_degree: int) -> torch.Tensor:
    """e3x `basis` with basic_fourier and smooth_cutoff: [E, 1, (L+1)^2, K] with entries

        Y_lm(r_hat) cos(k pi r / rc) exp(1 - 1/(1 - (r/rc)^2)),   k = 0..K-1, l <= L,

    Y orthonormal on the sphere; zero for r >= rc.
    """
    y = spherical_harmonics(list(range(max_degree + 1)), vec) * _ORTHONORMAL  # [E, (L+1)^2]
    radial = cosine_basis(dist, cutoff, num_radial) * smooth_cutoff(dist, cutoff)[:, None]  # [E, K]
    return (y[:, :, None] * radial[:, None, :]).unsqueeze(1)


class SpeciesAwareRadialBasis(nn.Module):
    """basis(r_ij) times Linear(K)(Embedding(Z_j)) of the neighbour's species, on every (l, m)."""

    def __init__(self, cutoff: float, num_radial: int, max_degree: int, embedding_features: int, max_z: int):
        super().__init__()
        self.cutoff, self.num_radial, self.max_degree = cutoff, num_radial, max_degree
        self.embedding = nn.Embedding(max_z, embedding_features)
        self.transform = nn.Linear(embedding_features, num_radial)

    def forward(self, vec: torch.Tensor, dist: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
        b = basis_expansion(vec, dist, self.cutoff, self.num_radial, self.max_degree)
        return b * self.transform(self.embedding(z_j))[:, None, None, :]


class NonlinearBlock(nn.Module):
    """y0 = Dense(F)(y);  out = Dense(F)(act(Norm(y0))) + y0   (act a gated activation)."""

    def __init__(self, parity: int, lmax: int, features: int, activation: str, global_mean: bool):
        super().__init__()
        self.activation = activation
        self.dense0 = EquiLinear(parity, lmax, features, features)
        self.norm = IrrepNorm(parity, lmax, features, global_mean)
        self.dense1 = EquiLinear(parity, lmax, features, features)

    def forward(self, y: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
        y0 = self.dense0(y)
        return self.dense1(gated(self.norm(y0, group), self.activation)) + y0


class AtomCentred(nn.Module):
    """ShallowTDSAAtomCenteredDescriptor without self-attention (mp_steps = 0).

        y_2 = sum_{j: r_ij < rc} SARB(r_ij, Z_j)          (no normalisation)
        y_(k+1) = TensorDense(F_TD, L)(y_k),  k = 1..N_TD
        a_i = concat_k  to_both_parities(NonlinearBlock_k(y_k), L)   -> [N, 2, (L+1)^2, K + N_TD F_TD]
    """

    def __init__(self, radial: SpeciesAwareRadialBasis, num_tensordenses: int, tensordense_features: int,
                 max_tensordense_degree: int, tensor: str, global_mean: bool):
        super().__init__()
        self.radial = radial
        self.lmax = max_tensordense_degree
        L0 = radial.max_degree
        self.tds = nn.ModuleList()
        shapes = [(1, L0, radial.num_radial)]
        for _ in range(num_tensordenses):
            p, l_in, f_in = shapes[-1]
            l_out = min(max_tensordense_degree, 2 * l_in)
            td = TensorDense(p, l_in, f_in, tensordense_features, l_out, tensor)
            self.tds.append(td)
            shapes.append((td.out_parity, l_out, tensordense_features))
        self.blocks = nn.ModuleList(NonlinearBlock(p, l, f, "bent_identity", global_mean) for p, l, f in shapes)
        self.features = sum(f for _, _, f in shapes)

    def forward(self, vec, dist, z, edge_index, n_nodes: int, group: torch.Tensor | None) -> torch.Tensor:
        i, j = edge_index
        rb = self.radial(vec, dist, z[j])
        y = [rb.new_zeros(n_nodes, *rb.shape[1:]).index_add(0, i, rb)]
        for td in self.tds:
            y.append(td(y[-1]))
        out = [to_both_parities(blk(yy, group), self.lmax) for blk, yy in zip(self.blocks, y)]
        return torch.cat(out, dim=-1)


class BondCentred(nn.Module):
    """BondCenteredTensorMomentDescriptor for directed pairs (i, j):

        y = a_i + a_j;  y0 = Dense(F)(y);  y = Dense(F)(mish(Norm(y0))) + y0
        b = Dense(F)(basis(r_ij))   (K cosines x smooth cutoff x Y_l, l <= L_basis)
        out = FusedTensor(L)(b, y)   (or the full product)
    """

    def __init__(self, features: int, lmax: int, cutoff: float, num_radial: int, max_basis_degree: int,
                 tensor: str, global_mean: bool):
        super().__init__()
        self.cutoff, self.num_radial, self.max_basis_degree = cutoff, num_radial, max_basis_degree
        self.block = NonlinearBlock(2, lmax, features, "mish", global_mean)
        self.bond_dense = EquiLinear(1, max_basis_degree, num_radial, features)
        cls = FusedTensor if tensor == "fused" else FullTensor
        self.tensor = cls(1, max_basis_degree, 2, lmax, lmax, features)

    def forward(self, a: torch.Tensor, vec, dist, edge_index, group: torch.Tensor | None) -> torch.Tensor:
        i, j = edge_index
        y = self.block(a[i] + a[j], group)
        b = self.bond_dense(basis_expansion(vec, dist, self.cutoff, self.num_radial, self.max_basis_degree))
        return self.tensor(b, y)


class ResidualDense(nn.Module):
    """DenseBlock: y0 = Dense(w0)(x); y = Dense(w_k)(bi(y)) for the later widths; out = w y0 + y,
    w a learnable scalar initialised to 0.1. One instance serves bond and atom features."""

    def __init__(self, parity: int, lmax: int, f_in: int, widths: tuple[int, ...]):
        super().__init__()
        self.dense = nn.ModuleList()
        prev = f_in
        for w in widths:
            self.dense.append(EquiLinear(parity, lmax, prev, w))
            prev = w
        self.resid_weight = nn.Parameter(torch.full((1,), 0.1)) if len(widths) > 1 else None
        self.features = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.dense[0](x)
        if self.resid_weight is None:
            return y0
        y = y0
        for d in self.dense[1:]:
            y = d(gated(y, "bent_identity"))
        return self.resid_weight * y0 + y
