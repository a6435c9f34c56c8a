"""A two-centre model with no message passing, used to exercise the contract.

On-site blocks: per element, learned coefficients of the rotation-invariant (L=0) coupled
irreps only. Edge blocks: each coupled irrep (L, parity (-1)^(la+lb)) of slot pair (a, b) is
f(|r|; Zi, Zj) * Y_L(r_hat) with f linear in a Gaussian radial basis times the cosine cutoff;
irreps whose parity differs from (-1)^L cannot be built from one vector and are zero.
"""

from __future__ import annotations

import torch

from zoo.data.graph import species_index
from zoo.data.torch_data import DatasetInfo, edge_vectors
from zoo.errors import ConfigError
from zoo.models.contract import Backbone, Prediction
from zoo.models.registry import register_model
from zoo.physics.coupling import WignerEckart
from zoo.physics.radial import cosine_cutoff, gaussian
from zoo.physics.wigner import spherical_harmonics


def gaussian_basis(d: torch.Tensor, cutoff: float, n: int) -> torch.Tensor:
    """[E, n] Gaussians on [0, cutoff] (sigma = centre spacing) times the cosine cutoff envelope."""
    return gaussian(d, 0.0, cutoff, n) * cosine_cutoff(d, cutoff)[:, None]


@register_model("trivial")
class TrivialTwoCentre(Backbone):
    message_passing_layers = 0

    def __init__(self, info: DatasetInfo, n_radial: int = 8):
        if info.spinful:
            raise ConfigError(f"trivial is spinless and cannot predict the spinful (SOC) blocks of dataset "
                              f"{info.name!r}; use trivial-soc")
        super().__init__(info)
        self.we = WignerEckart(info.layout)
        self.n_radial = n_radial
        elements = list(info.elements)
        self.register_buffer("z_index", torch.as_tensor(species_index(elements)), persistent=False)
        ne = len(elements)
        irreps = self.we.irreps
        self.ls = [ir.l for _, ir in irreps]
        self.allowed = [ir.p == (-1) ** ir.l for _, ir in irreps]
        scalar = torch.tensor([ir.l == 0 for _, ir in irreps])
        self.register_buffer("scalar_mask", scalar, persistent=False)
        self.onsite = torch.nn.Parameter(torch.zeros(ne, len(irreps)))
        self.radial = torch.nn.Parameter(torch.randn(ne, ne, n_radial, len(irreps)) * 0.01)
        self.lmax = max(self.ls)

    def forward(self, batch) -> Prediction:
        zi = self.z_index[batch.z]
        irreps = self.we.irreps
        # on-site: scalar irreps only, each broadcast over its (single) component
        node_coeff = self.onsite[zi] * self.scalar_mask.to(self.onsite.dtype)
        node = torch.cat([node_coeff[:, k:k + 1].expand(-1, ir.dim) for k, (_, ir) in enumerate(irreps)], dim=1)
        vec = edge_vectors(batch)
        d = vec.norm(dim=1)
        rbf = gaussian_basis(d, self.info.cutoff, self.n_radial)
        i, j = batch.edge_index
        w = torch.einsum("er,erk->ek", rbf, self.radial[zi[i], zi[j]])
        sh = spherical_harmonics(list(range(self.lmax + 1)), vec)
        offs = [l * l for l in range(self.lmax + 2)]
        parts = []
        for k, (_, ir) in enumerate(irreps):
            y = sh[:, offs[ir.l]:offs[ir.l + 1]]
            parts.append(w[:, k:k + 1] * y if self.allowed[k] else torch.zeros_like(y))
        edge = torch.cat(parts, dim=1)
        return Prediction(self.we.to_blocks(node), self.we.to_blocks(edge))
