"""The `su2` spin-orbit head of `hamgnn-soc`: a TR-even spinful block from coupled irreps, no L blocks.

A spinful block (spin-major, docs/adr/0006) is written in the Pauli basis

    H_ij = kron(I2, H0_ij) + i sum_a kron(sigma_a, X_a,ij),      a = x, y, z,

with H0 (the spinless head's block) and X_a real n x n. This is the general time-reversal-even
block: with T(H) = Theta H^* Theta^dagger, Theta = kron(i sigma_y, I), T maps kron(I2, A) to
kron(I2, A^*) and kron(sigma_a, B) to -kron(sigma_a, B^*), so T(H) = H iff H0 is real and every
spin term is imaginary. T is an antilinear involution on complex 2n_i x 2n_j blocks (8 n_i n_j real
dimensions); its fixed space has 4 n_i n_j = n_i n_j (H0) + 3 n_i n_j (X) real dimensions, all
of them reached here.

Rotation: kron(U, D_i) H kron(U, D_j)^dagger with U sigma_a U^dagger = sum_b R_ba sigma_b gives
X'_b = sum_a R_ba D_i X_a D_j^T: X is an element of 1e (x) l_i (x) l_j (sigma axial, so the
vector index is even; the orbital parity (-1)^(l_i + l_j) rides on the coupled irreps). Hence

    vec(X)[e, m_i, m_j] = sum_{L, M} Q^{l_i l_j}[(m_i m_j), (L, M)] sum_K Q^{1 L}[(e, M), K] c_{L K},
    L = |l_i - l_j| .. l_i + l_j,  K = |L - 1| .. L + 1,  parity of c_{L K} = (-1)^(l_i + l_j),

with Q = `zoo.physics.coupling.coupling_matrix` (orthogonal), e the internal l = 1 order
(y, z, x). Equivalence with the total-J form of HamGNN v2.1 / DeepH-E3 (real and imaginary
irreps of (l_i (x) 1/2) (x) (l_j (x) 1/2), j1 = l_i +- 1/2, j2 = l_j +- 1/2, J = |j1-j2|..j1+j2):
(l_i (x) 1/2) (x) (l_j (x) 1/2)^* = (l_i (x) l_j) (x) (1/2 (x) 1/2) = (l_i (x) l_j) (x) (0 + 1), and the
0 + 1 of the spin product is exactly (I2, sigma_a). Both forms carry the same irreps J with the
same multiplicities and are related by a fixed unitary recoupling (9j symbols) inside each J, which
the output Linear (arbitrary per-irrep mixing) absorbs; restricting to T-even blocks keeps, per
irrep, the real H0 and imaginary X parts above. Hermiticity is imposed by the symmetrisation in
the model (X_ji(-R) = -X_ij(R)^T, X_ii antisymmetric), exactly as for H0.
"""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3

from zoo.physics.basis import OrbitalLayout
from zoo.physics.coupling import coupling_matrix
from zoo.physics.spin import complex_dtype, pauli

#: physical axis a = x, y, z -> its row in the internal l = 1 order (y, z, x)
_INTERNAL_ROW_OF_AXIS = (2, 0, 1)


class SpinCoupling(torch.nn.Module):
    """Coupled irreps [..., irreps.dim] -> real X [..., 3, n_max, n_max] (physical a = x, y, z).

    The map is orthogonal (squared errors in X equal squared errors in the coefficients); every
    slot pair (a, b) of the padded layout contributes its own irreps, in slot order a-major, then
    L, then K.
    """

    def __init__(self, layout: OrbitalLayout):
        super().__init__()
        self.layout = layout
        n = layout.n_max
        cols, irreps = [], []
        for a, la in enumerate(layout.slot_ls):
            for b, lb in enumerate(layout.slot_ls):
                q = coupling_matrix(la, lb)
                oa, ob = layout.slot_offsets[a], layout.slot_offsets[b]
                parity = 1 if (la + lb) % 2 == 0 else -1
                start = 0
                for L in range(abs(la - lb), la + lb + 1):
                    qL = q[:, start:start + 2 * L + 1].reshape(2 * la + 1, 2 * lb + 1, 2 * L + 1)
                    start += 2 * L + 1
                    q1 = coupling_matrix(1, L).reshape(3, 2 * L + 1, -1)
                    t = np.einsum("ijM,eMk->eijk", qL, q1)  # [3, 2la+1, 2lb+1, dim_K]
                    full = np.zeros((3, n, n, t.shape[-1]))
                    full[:, oa:oa + 2 * la + 1, ob:ob + 2 * lb + 1] = t
                    cols.append(full.reshape(3 * n * n, -1))
                    irreps += [(1, (K, parity)) for K in range(abs(L - 1), L + 2)]
        q = np.concatenate(cols, axis=1).reshape(3, n, n, -1)[list(_INTERNAL_ROW_OF_AXIS)]
        self.irreps = o3.Irreps(irreps)
        self.register_buffer("q", torch.as_tensor(q.reshape(3 * n * n, -1), dtype=torch.float64), persistent=False)

    def forward(self, coupled: torch.Tensor) -> torch.Tensor:
        n = self.layout.n_max
        return (coupled @ self.q.to(coupled.dtype).T).reshape(*coupled.shape[:-1], 3, n, n)


def pauli_expand(x: torch.Tensor) -> torch.Tensor:
    """i sum_a kron(sigma_a, X_a) for real X [B, 3, n, n] -> complex [B, 2n, 2n] (spin-major)."""
    cdt = complex_dtype(x.dtype)
    sig = pauli(cdt, device=x.device)
    n = x.shape[-1]
    return (1j * torch.einsum("ast,baij->bsitj", sig, x.to(cdt))).reshape(-1, 2 * n, 2 * n)
