"""Two-centre Slater-Koster backbone: the physics floor every neural backbone must beat.

Off-site block of atoms i (element Zi) and j (Zj) at bond vector r = r_j + shift.cell - r_i:
for every shell pair (a of Zi, b of Zj) the bond-frame block (z along r) is diagonal in m,

    B^bond[m, m'] = delta_{m m'} V_{Zi Zj a b |m|}(|r|),   |m| <= min(l_a, l_b),

with V a learned linear combination of Gaussian radial functions (`zoo.physics.radial.gaussian`,
centres on [r_min, cutoff], sigma = spacing) times the cosine cutoff envelope. It is rotated to the
global frame as D(Q) B^bond D(Q)^T with Q = edge_frame(r)^T (Q z = r_hat, `zoo.physics.frames`);
any Q with that property gives the same block because B^bond commutes with rotations about z.
The SK reciprocity V_{ji, b a} = (-1)^(l_a + l_b) V_{ij, a b} is built in
(one stored function per unordered pair of (element, shell)), so H_ji(-R) = H_ij(R)^T exactly;
inversion parity (-1)^(l_a + l_b) follows from the bond-frame construction.

On-site block of atom i: per element a learned symmetric matrix between shells of equal l
(times the identity in m), plus, with `crystal_field`, a sum over neighbours j of a
symmetrised two-centre term of the same bond-frame form (a crystal-field / environment
correction, which makes on-site blocks depend on the first neighbour shell).
"""

from __future__ import annotations

import torch

from zoo.data.graph import species_index
from zoo.data.torch_data import DatasetInfo, edge_vectors
from zoo.errors import ConfigError
from zoo.models.contract import Backbone, Prediction
from zoo.models.registry import register_model
from zoo.physics.frames import edge_frame
from zoo.physics.radial import cosine_cutoff, gaussian
from zoo.physics.wigner import wigner_D_layout


@register_model("sk")
class SlaterKoster(Backbone):
    """Two-centre Slater-Koster tight binding with learned bond integrals V_{l l' |m|}(r)."""

    message_passing_layers = 0
    # SK reciprocity is built into the parameter storage and the on-site terms are symmetrised
    hermitian = True

    def __init__(self, info: DatasetInfo, n_radial: int = 8, crystal_field: bool = True, r_min: float = 0.5,
                 init_scale: float = 0.01):
        if info.spinful:
            raise ConfigError(f"sk is a spinless Slater-Koster model and cannot predict the spinful (SOC) blocks "
                              f"of dataset {info.name!r}")
        super().__init__(info)
        if n_radial < 1:
            raise ConfigError(f"sk: n_radial must be >= 1, got {n_radial}")
        if not 0 <= r_min < info.cutoff:
            raise ConfigError(f"sk: r_min must lie in [0, cutoff={info.cutoff}), got {r_min}")
        self.n_radial, self.crystal_field, self.r_min = int(n_radial), bool(crystal_field), float(r_min)
        # crystal field makes node outputs depend on the first neighbour shell
        self.message_passing_layers = 1 if self.crystal_field else 0
        # the crystal field of atom i sums over its edges (i, j): messages flow from row 1 to row 0
        self.message_flow = "target_to_source"
        lay = info.layout
        self.slot_ls = list(lay.slot_ls)
        ns, n = len(self.slot_ls), lay.n_max
        self.mm = max(self.slot_ls) + 1
        elements = list(info.elements)
        ne = len(elements)
        self.register_buffer("z_index", torch.as_tensor(species_index(elements)), persistent=False)

        # canonical storage: V(zi, zj, a, b) = sign * P[canon(zi, zj, a, b)], sign = (-1)^(la+lb) when swapped
        shape = (ne, ne, ns, ns)
        canon = torch.zeros(shape, dtype=torch.long)
        sign = torch.ones(shape)
        sym = torch.zeros((ne, ns, ns), dtype=torch.long)  # on-site: symmetric in (a, b)
        for zi in range(ne):
            for zj in range(ne):
                for a in range(ns):
                    for b in range(ns):
                        if (zi, a) <= (zj, b):
                            canon[zi, zj, a, b] = ((zi * ne + zj) * ns + a) * ns + b
                        else:
                            canon[zi, zj, a, b] = ((zj * ne + zi) * ns + b) * ns + a
                            sign[zi, zj, a, b] = (-1.0) ** (self.slot_ls[a] + self.slot_ls[b])
            for a in range(ns):
                for b in range(ns):
                    sym[zi, a, b] = (zi * ns + min(a, b)) * ns + max(a, b)
        self.register_buffer("canon", canon, persistent=False)
        self.register_buffer("sign", sign, persistent=False)
        self.register_buffer("sym", sym, persistent=False)

        # expansion [ns*ns*mm, n, n]: value (a, b, |m|) -> padded entries (m, m) of slot pair (a, b)
        expand = torch.zeros(ns, ns, self.mm, n, n)
        same_l = torch.zeros(ns, ns, n, n)  # on-site: identity in m between slots of equal l
        for a, la in enumerate(self.slot_ls):
            for b, lb in enumerate(self.slot_ls):
                oa, ob = lay.slot_offsets[a], lay.slot_offsets[b]
                for m in range(-min(la, lb), min(la, lb) + 1):
                    expand[a, b, abs(m), oa + la + m, ob + lb + m] = 1.0
                if la == lb:
                    for m in range(2 * la + 1):
                        same_l[a, b, oa + m, ob + m] = 1.0
        self.register_buffer("expand", expand.reshape(ns * ns * self.mm, n, n), persistent=False)
        self.register_buffer("same_l", same_l.reshape(ns * ns, n, n), persistent=False)
        # |m| > min(la, lb) entries do not exist: mask them out of the parameters' effect
        valid = torch.zeros(ns, ns, self.mm)
        for a, la in enumerate(self.slot_ls):
            for b, lb in enumerate(self.slot_ls):
                valid[a, b, : min(la, lb) + 1] = 1.0
        self.register_buffer("valid", valid, persistent=False)

        self.bond = torch.nn.Parameter(torch.randn(ne * ne * ns * ns, self.mm, self.n_radial) * init_scale)
        self.onsite = torch.nn.Parameter(torch.zeros(ne * ns * ns))
        if self.crystal_field:
            self.field = torch.nn.Parameter(torch.randn(ne, ne * ns * ns, self.mm, self.n_radial) * init_scale)

    def _rotation(self, vec: torch.Tensor) -> torch.Tensor:
        """[E, n, n] block-diagonal Wigner-D of Q = edge_frame(r)^T (Q z = r_hat) over the padded slots."""
        return wigner_D_layout(self.slot_ls, edge_frame(vec).transpose(1, 2))

    def _bond_blocks(self, table: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor, rbf: torch.Tensor) -> torch.Tensor:
        """[E, n, n] bond-frame blocks from per-pair tables [ne, ne, ns*ns*mm, n_radial]."""
        vals = rbf.new_zeros(rbf.shape[0], table.shape[2])
        ne = table.shape[0]
        key = zi * ne + zj
        for k in torch.unique(key).tolist():
            idx = (key == k).nonzero().squeeze(1)
            vals[idx] = rbf[idx] @ table[k // ne, k % ne].T
        return torch.einsum("ek,kpq->epq", vals, self.expand.to(vals.dtype))

    def forward(self, batch) -> Prediction:
        ne, ns = len(self.info.elements), len(self.slot_ls)
        z = self.z_index[batch.z]
        i, j = batch.edge_index
        vec = edge_vectors(batch)
        d = vec.norm(dim=1)
        rbf = gaussian(d, self.r_min, self.info.cutoff, self.n_radial) * cosine_cutoff(d, self.info.cutoff)[:, None]
        rot = self._rotation(vec)
        valid = self.valid.reshape(1, 1, ns * ns, self.mm, 1).to(rbf.dtype)

        # off-site: reciprocity-symmetrised bond integrals
        v = self.bond[self.canon.reshape(-1)].reshape(ne, ne, ns * ns, self.mm, self.n_radial)
        v = v * self.sign.reshape(ne, ne, ns * ns, 1, 1).to(v.dtype) * valid
        bond = self._bond_blocks(v.reshape(ne, ne, -1, self.n_radial), z[i], z[j], rbf)
        edge = rot @ bond @ rot.transpose(1, 2)

        # on-site: per-element shell matrix, identity in m between shells of equal l
        eps = self.onsite[self.sym.reshape(-1)].reshape(ne, ns * ns)
        node = torch.einsum("nk,kpq->npq", eps[z], self.same_l.to(eps.dtype))
        if self.crystal_field:
            f = self.field[:, self.sym.reshape(-1)].reshape(ne, ne, ns * ns, self.mm, self.n_radial) * valid
            cf = self._bond_blocks(f.reshape(ne, ne, -1, self.n_radial), z[i], z[j], rbf)
            cf = rot @ cf @ rot.transpose(1, 2)
            node = node.index_add(0, i, 0.5 * (cf + cf.transpose(1, 2)))
        return Prediction(node, edge)
