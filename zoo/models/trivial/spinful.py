"""`trivial-soc`: the smallest spinful backbone, to exercise the spinful contract (docs/adr/0006).

    H_ii = I2 (x) H0_ii + sum_slots lambda_(Z_i, slot) (L.sigma)_slot
    H_ij = I2 (x) H0_ij + sum_a sigma_a (x) (L_a M_ij + M_ij L_a)              (edges)

H0 and M are the outputs of two independent `trivial` two-centre models (spinless, real, padded
in the slot layout); L_a = i X_a is the orbital angular momentum over the padded slots
(`zoo.physics.spin`), block diagonal per slot, so it never mixes real orbitals with padding;
lambda is learned per (element, slot). Every term is SU(2)-equivariant under kron(U, D_layout)
(L.sigma and sigma.L are invariant; H0, M rotate by Wigner-D), parity-even for improper
rotations, and time-reversal symmetric (L and sigma are both odd under T, H0 and M are real).
Not hermitian by construction (the `trivial` edge blocks are not); the harness hermitizes.
"""

from __future__ import annotations

import dataclasses

import torch

from zoo.data.torch_data import DatasetInfo
from zoo.errors import ConfigError
from zoo.models.contract import Backbone, Prediction
from zoo.models.registry import register_model
from zoo.models.trivial.model import TrivialTwoCentre
from zoo.physics.spin import complex_dtype, l_dot_sigma, orbital_angular_momentum_shells, pauli, spin_identity


@register_model("trivial-soc")
class TrivialSOC(Backbone):
    """Spinful contract exerciser: I2 (x) two-centre H0 + lambda L.sigma on site + two-centre SOC off site."""

    message_passing_layers = 0
    spinful = True

    def __init__(self, info: DatasetInfo, n_radial: int = 8):
        if not info.spinful:
            raise ConfigError(f"trivial-soc predicts spinful (2n x 2n complex) blocks and cannot be trained on "
                              f"the spinless dataset {info.name!r}; use `trivial` there")
        super().__init__(info)
        spinless = dataclasses.replace(info, spinful=False)
        self.h0 = TrivialTwoCentre(spinless, n_radial=n_radial)
        self.m = TrivialTwoCentre(spinless, n_radial=n_radial)  # the two-centre SOC factor
        # only M's edge blocks are used (the on-site SOC is lambda L.sigma): freeze its on-site parameter
        self.m.onsite.requires_grad_(False)
        layout = info.layout
        slot_ls = list(layout.slot_ls)
        # X_a (real, float64 so that .double() loses nothing): L_a = i X_a over the padded slots
        self.register_buffer("x_gen", orbital_angular_momentum_shells(slot_ls).imag.contiguous(), persistent=False)
        # per slot s: (L.sigma)_s on the padded spinful layout, stored as real and imaginary parts
        n = layout.n_max
        ls_slots = torch.zeros(len(slot_ls), 2 * n, 2 * n, dtype=torch.complex128)
        for s, (l, o) in enumerate(zip(slot_ls, layout.slot_offsets)):
            d = 2 * l + 1
            op = l_dot_sigma([l]).reshape(2, d, 2, d)
            view = ls_slots[s].view(2, n, 2, n)
            view[:, o:o + d, :, o:o + d] = op
        self.register_buffer("ls_re", ls_slots.real.contiguous(), persistent=False)
        self.register_buffer("ls_im", ls_slots.imag.contiguous(), persistent=False)
        # which slots each element fills (lambda of an absent slot would only touch padding; zero it)
        elements = list(info.elements)
        has = torch.zeros(max(elements) + 1, len(slot_ls))
        for z in elements:
            has[z, list(layout.slots_of[z])] = 1.0
        self.register_buffer("slot_mask", has, persistent=False)
        self.lam = torch.nn.Parameter(torch.zeros(max(elements) + 1, len(slot_ls)))

    def forward(self, batch) -> Prediction:
        h0 = self.h0(batch)
        m_edge = self.m(batch).edge_blocks
        dt = h0.node_blocks.dtype
        cdt = complex_dtype(dt)
        n = h0.node_blocks.shape[-1]
        sig = pauli(cdt, device=m_edge.device)
        # on-site: I2 (x) H0 + sum_s lambda_(z, s) (L.sigma)_s
        lam = (self.lam * self.slot_mask)[batch.z].to(dt)  # [N, slots]
        ls = torch.complex(self.ls_re.to(dt), self.ls_im.to(dt))
        node = spin_identity(h0.node_blocks.to(cdt)) + torch.einsum("ns,sij->nij", lam.to(cdt), ls)
        # off-site: sum_a sigma_a (x) (L_a M + M L_a), with L_a = i X_a
        x = self.x_gen.to(dt)
        anti = torch.einsum("aij,ejk->aeik", x, m_edge) + torch.einsum("eij,ajk->aeik", m_edge, x)
        soc = torch.einsum("ast,aeij->esitj", sig, 1j * anti.to(cdt)).reshape(-1, 2 * n, 2 * n)
        edge = spin_identity(h0.edge_blocks.to(cdt)) + soc
        return Prediction(node, edge)
