"""Spin-1/2 rotations, the spinful block rotation and time reversal (ADR 0006).

Spinful layout: the block of atoms (i, j) is complex [2 n_i, 2 n_j], spin-major,

    H_ij = [[H_ij^{up,up},   H_ij^{up,down}],
            [H_ij^{down,up}, H_ij^{down,down}]],

each quadrant n_i x n_j in the internal real-orbital convention (ADR 0001). An operator on
spin (x) orbitals is therefore ``kron(S, O)`` with the 2x2 spin factor S first.

Rotation. For a proper rotation R = exp(theta n.G) (right-handed, angle theta about unit n)

    U(R) = exp(-i theta n.sigma / 2) = cos(theta/2) I - i sin(theta/2) n.sigma,

so that U sigma.v U^dagger = sigma.(R v), i.e. U sigma_a U^dagger = sum_b R_ba sigma_b.
U is defined up to a sign (SU(2) double cover); U(R1 R2) = +-U(R1) U(R2). Spin is axial, so
for an improper R (det -1) U(R) = U(-R): parity acts on the orbitals only (wigner_D carries
(-1)^l). The spinful Wigner matrix of a shell list is

    D_s(R) = kron(U(R), D_shells(R)),   H'_ij = D_s,i(R) H_ij D_s,j(R)^dagger.

Orbital angular momentum in the real basis: L_a = i X_a with X_a the real antisymmetric
generator of `wigner_D` about physical axis a, so that D_l(R) = exp(-i theta n.L) for proper R
and L.sigma (= sum_a kron(sigma_a, L_a)) is invariant under D_s. L is hermitian and purely
imaginary in a real basis.

Time reversal with real orbitals: Theta = kron(i sigma_y, I_n) K (K = complex conjugation),
Theta^2 = -1, and T(H) = Theta H^* Theta^dagger with Theta = kron([[0, 1], [-1, 0]], I_n).
A time-reversal-symmetric Hamiltonian has T(H_ij) = H_ij for every block.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from e3nn import o3

from zoo.physics.wigner import wigner_D_shells

#: physical axis a -> index of e3nn's so3 generator about that axis (e3nn frame is (y, z, x))
_E3NN_GENERATOR_OF_AXIS = (2, 0, 1)


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype matching a real or complex one: complex64 for float32 (and below) or complex64,
    complex128 otherwise (spinful blocks of float32 / float64 data)."""
    return torch.complex64 if dtype in (torch.float32, torch.complex64, torch.float16, torch.bfloat16) else torch.complex128


def spin_identity(blocks: torch.Tensor) -> torch.Tensor:
    """kron(I2, B) for blocks [..., n, n] -> [..., 2n, 2n] in the spin-major layout (docs/adr/0006),
    keeping B's dtype: a spin-independent term (H0, or the spin-diagonal overlap S)."""
    n = blocks.shape[-1]
    out = blocks.new_zeros(*blocks.shape[:-2], 2 * n, 2 * n)
    out[..., :n, :n] = blocks
    out[..., n:, n:] = blocks
    return out


def pauli(dtype: torch.dtype = torch.complex128, device: torch.device | str | None = None) -> torch.Tensor:
    """Pauli matrices [3, 2, 2] (sigma_x, sigma_y, sigma_z)."""
    s = torch.tensor(
        [[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=torch.complex128, device=device
    )
    return s.to(dtype)


def _as_rotation(R) -> torch.Tensor:
    if isinstance(R, torch.Tensor):
        return R
    return torch.as_tensor(np.asarray(R), dtype=torch.float64)


def _quaternion(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (w, x, y, z) of proper rotations [..., 3, 3] (Shepperd's branch choice)."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # four candidate (unnormalised) quaternions; use the one with the largest pivot for stability
    cands = torch.stack(
        [
            torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                         m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                         1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                         1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        -2,
    )  # [..., 4, 4]; candidate c has component c equal to 4 q_c^2
    pivots = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                          1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = pivots.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    # fix the SU(2) sign so that w >= 0 (continuous near the identity)
    return torch.where(q[..., :1] < 0, -q, q)


def su2(R) -> torch.Tensor:
    """Spin-1/2 rotation U(R) [..., 2, 2] (complex) with U sigma_a U^dagger = sum_b R_ba sigma_b.

    R: [..., 3, 3] rotation matrices; an improper R gives U(-R) (spin is axial). The overall
    sign is fixed by Re(q_0) >= 0 of the rotation's quaternion, so U(R1 R2) = +-U(R1) U(R2).
    Complex dtype follows R (complex64 for float32, complex128 for float64).
    """
    R = _as_rotation(R)
    det = torch.linalg.det(R.to(torch.float64))
    Rp = torch.where((det < 0)[..., None, None], -R, R)
    q = _quaternion(Rp.to(torch.float64))
    w, v = q[..., 0], q[..., 1:]
    sig = pauli(device=R.device)
    eye = torch.eye(2, dtype=torch.complex128, device=R.device)
    # U = w I - i (v . sigma), with (w, v) = (cos(theta/2), sin(theta/2) n)
    U = w[..., None, None].to(torch.complex128) * eye - 1j * torch.einsum("...a,aij->...ij", v.to(torch.complex128), sig)
    return U.to(complex_dtype(R.dtype))


def spinful_wigner(shells: Sequence[int], R) -> torch.Tensor:
    """Spinful rotation of one atom's (or one padded layout's) orbitals: kron(U(R), D_shells(R)), [2n, 2n]."""
    R = _as_rotation(R)
    D = wigner_D_shells(list(shells), R)
    U = su2(R)
    return torch.kron(U, D.to(U.dtype))


def rotate_spinful(block, shells_row: Sequence[int], shells_col: Sequence[int], R):
    """D_s,row(R) @ block @ D_s,col(R)^dagger for one block [2 n_r, 2 n_c] or a batch [B, 2 n_r, 2 n_c].

    Accepts numpy or torch; returns the same kind (numpy in, numpy out), complex.
    """
    is_np = not isinstance(block, torch.Tensor)
    b = torch.as_tensor(np.asarray(block)) if is_np else block
    R = _as_rotation(R).to(device=b.device)
    Dr = spinful_wigner(shells_row, R)
    Dc = Dr if list(shells_row) == list(shells_col) else spinful_wigner(shells_col, R)
    cdt = complex_dtype(b.dtype)
    out = Dr.to(cdt) @ b.to(cdt) @ Dc.to(cdt).conj().transpose(-1, -2)
    return out.numpy() if is_np else out


def time_reversal_matrix(n: int, dtype: torch.dtype = torch.complex128, device: torch.device | str | None = None) -> torch.Tensor:
    """Unitary part of Theta for n real orbitals: kron([[0, 1], [-1, 0]], I_n) = kron(i sigma_y, I_n), [2n, 2n]."""
    isy = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64, device=device)
    return torch.kron(isy, torch.eye(n, dtype=torch.float64, device=device)).to(dtype)


def time_reverse(block):
    """T(H) = Theta_r H^* Theta_c^dagger for a block [..., 2 n_r, 2 n_c] (numpy or torch, same kind out).

    In quadrants: T([[A, B], [C, D]]) = [[D^*, -C^*], [-B^*, A^*]]. A block with T(H) = H is
    time-reversal symmetric.
    """
    is_np = not isinstance(block, torch.Tensor)
    b = torch.as_tensor(np.asarray(block)) if is_np else block
    nr, nc = b.shape[-2], b.shape[-1]
    if nr % 2 or nc % 2:
        raise ValueError(f"a spinful block needs even dimensions, got {tuple(b.shape[-2:])}")
    cdt = complex_dtype(b.dtype)
    Tr = time_reversal_matrix(nr // 2, cdt, b.device)
    Tc = Tr if nr == nc else time_reversal_matrix(nc // 2, cdt, b.device)
    out = Tr @ b.to(cdt).conj() @ Tc.transpose(-1, -2)  # Theta is real, so Theta^dagger = Theta^T
    return out.numpy() if is_np else out


@lru_cache(maxsize=None)
def _generators(l: int) -> torch.Tensor:
    """Real antisymmetric X_a (physical a = x, y, z) with D_l(exp(theta G_a)) = exp(theta X_a), float64.

    e3nn's so3 generators (complex-basis ladder operators conjugated into its real basis), built
    here in float64 because e3nn builds them in the default dtype.
    """
    m = torch.arange(-l, l + 1, dtype=torch.float64)
    # <m+1| J+ |m> = sqrt(l(l+1) - m(m+1)); e3nn's su(2) generators with its sign conventions
    up = torch.sqrt(l * (l + 1) - m[:-1] * (m[:-1] + 1))
    raising = torch.diag(-up, diagonal=-1).to(torch.complex128)
    lowering = torch.diag(up, diagonal=1).to(torch.complex128)
    J = torch.stack([0.5 * (raising + lowering), torch.diag(1j * m.to(torch.complex128)), -0.5j * (raising - lowering)])
    Q = o3.change_basis_real_to_complex(l, dtype=torch.float64)
    X = Q.conj().T @ J @ Q
    return X.real[list(_E3NN_GENERATOR_OF_AXIS)].contiguous()


def orbital_angular_momentum(l: int) -> torch.Tensor:
    """(L_x, L_y, L_z) in the internal real basis of one shell, [3, 2l+1, 2l+1] complex128.

    L_a = i X_a, hermitian and purely imaginary; [L_a, L_b] = i eps_abc L_c; L^2 = l(l+1);
    D_l(R) = exp(-i theta n.L) for a proper rotation by theta about n.
    """
    if l < 0:
        raise ValueError(f"l must be >= 0, got {l}")
    return 1j * _generators(int(l)).to(torch.complex128)


def orbital_angular_momentum_shells(shells: Sequence[int]) -> torch.Tensor:
    """L over a list of shells (block diagonal), [3, n, n] complex128."""
    Ls = [orbital_angular_momentum(l) for l in shells]
    return torch.stack([torch.block_diag(*[L[a] for L in Ls]) for a in range(3)])


def l_dot_sigma(shells: Sequence[int]) -> torch.Tensor:
    """L.sigma = sum_a kron(sigma_a, L_a) over a list of shells, [2n, 2n] complex128 (spin-major).

    Eigenvalues per shell: l (multiplicity 2l+2) and -(l+1) (multiplicity 2l), i.e. 2 L.S.
    """
    L = orbital_angular_momentum_shells(shells)
    sig = pauli()
    return sum(torch.kron(sig[a], L[a]) for a in range(3))
