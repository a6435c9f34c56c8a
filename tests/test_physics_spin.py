"""Spin-1/2 rotations, spinful Wigner matrices, orbital angular momentum and time reversal."""

import numpy as np
import pytest
import torch

from zoo.physics.spin import (
    l_dot_sigma,
    orbital_angular_momentum,
    pauli,
    rotate_spinful,
    spinful_wigner,
    su2,
    time_reversal_matrix,
    time_reverse,
)
from zoo.physics.wigner import random_rotation, wigner_D, wigner_D_shells

EPS = np.zeros((3, 3, 3))
EPS[0, 1, 2] = EPS[1, 2, 0] = EPS[2, 0, 1] = 1
EPS[0, 2, 1] = EPS[2, 1, 0] = EPS[1, 0, 2] = -1


def _axis_angle(n, theta) -> torch.Tensor:
    n = torch.as_tensor(n, dtype=torch.float64)
    n = n / n.norm()
    K = torch.tensor([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]], dtype=torch.float64)
    return torch.linalg.matrix_exp(theta * K)


def _close_up_to_sign(a: torch.Tensor, b: torch.Tensor) -> float:
    return min((a - b).abs().max().item(), (a + b).abs().max().item())


@pytest.mark.parametrize("seed", range(4))
def test_su2_rotates_pauli_vector(seed):
    R = random_rotation(seed)
    U = su2(R)
    s = pauli()
    assert torch.allclose(U @ U.conj().T, torch.eye(2, dtype=U.dtype), atol=1e-14)
    assert abs(torch.linalg.det(U) - 1) < 1e-14
    lhs = U @ s @ U.conj().T
    rhs = torch.einsum("ba,bij->aij", R.to(s.dtype), s)  # sigma.(R v) = sum_ab sigma_b R_ba v_a
    assert (lhs - rhs).abs().max() < 1e-14


def test_su2_is_a_projective_representation():
    for seed in range(6):
        R1, R2 = random_rotation(seed), random_rotation(100 + seed, improper=seed % 2 == 1)
        assert _close_up_to_sign(su2(R1 @ R2), su2(R1) @ su2(R2)) < 1e-13
    # the double cover: a 2 pi rotation is -1 (tested through two pi rotations about one axis)
    Rpi = _axis_angle([1.0, 2.0, 0.5], np.pi)
    assert torch.allclose(su2(Rpi) @ su2(Rpi), -torch.eye(2, dtype=torch.complex128), atol=1e-13)


def test_su2_rotation_about_z_and_half_turns():
    th = 0.7
    U = su2(_axis_angle([0, 0, 1], th))
    ref = torch.diag(torch.tensor([np.exp(-0.5j * th), np.exp(0.5j * th)]))
    assert _close_up_to_sign(U, ref) < 1e-14
    # trace -1 rotations (angle pi) need the non-w pivot; check the defining property there too
    s = pauli()
    for R in (torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)),
              torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)), _axis_angle([1, 1, 0], np.pi)):
        U = su2(R)
        assert (U @ s @ U.conj().T - torch.einsum("ba,bij->aij", R.to(s.dtype), s)).abs().max() < 1e-14


def test_su2_improper_equals_proper_and_batches_and_dtypes():
    R = random_rotation(3)
    assert torch.equal(su2(-R), su2(R))  # spin is axial
    Rb = torch.stack([random_rotation(i, improper=i % 2 == 0) for i in range(5)])
    Ub = su2(Rb)
    assert Ub.shape == (5, 2, 2) and Ub.dtype == torch.complex128
    for i in range(5):
        assert torch.allclose(Ub[i], su2(Rb[i]))
    assert su2(R.float()).dtype == torch.complex64


@pytest.mark.parametrize("l", [0, 1, 2, 3])
def test_orbital_angular_momentum_algebra(l):
    L = orbital_angular_momentum(l)
    assert torch.allclose(L, L.conj().transpose(-1, -2), atol=1e-14)  # hermitian
    assert L.real.abs().max() < 1e-14  # purely imaginary in a real basis
    for a in range(3):
        for b in range(3):
            comm = L[a] @ L[b] - L[b] @ L[a]
            ref = 1j * sum(EPS[a, b, c] * L[c] for c in range(3))
            assert (comm - ref).abs().max() < 1e-13
    L2 = sum(L[a] @ L[a] for a in range(3))
    assert torch.allclose(L2, l * (l + 1) * torch.eye(2 * l + 1, dtype=L2.dtype), atol=1e-13)


@pytest.mark.parametrize("l", [1, 2, 3])
def test_wigner_D_is_exp_of_L(l):
    L = orbital_angular_momentum(l)
    for n, th in (([0, 0, 1], 0.4), ([1, 0, 0], 1.3), ([0.3, -1.2, 0.8], 2.2)):
        R = _axis_angle(n, th)
        nn = torch.as_tensor(n, dtype=torch.float64)
        nn = nn / nn.norm()
        D = torch.linalg.matrix_exp(-1j * th * torch.einsum("a,aij->ij", nn.to(L.dtype), L))
        assert (D - wigner_D(l, R)).abs().max() < 1e-13


def test_l_dot_sigma_spectrum_and_invariance():
    shells = [0, 1, 2]
    ls = l_dot_sigma(shells)
    ev = torch.linalg.eigvalsh(ls)
    # per shell l: +l (2l+2 times) and -(l+1) (2l times)
    ref = sorted([0.0] * 2 + [1.0] * 4 + [-2.0] * 2 + [2.0] * 6 + [-3.0] * 4)
    assert torch.allclose(ev, torch.tensor(ref, dtype=ev.dtype), atol=1e-12)
    zeeman = torch.kron(pauli()[2], torch.eye(9, dtype=torch.complex128))
    for seed, improper in ((0, False), (1, True), (2, False)):
        R = random_rotation(seed, improper=improper)
        D = spinful_wigner(shells, R)
        assert torch.allclose(D @ D.conj().T, torch.eye(18, dtype=D.dtype), atol=1e-13)
        assert (D @ ls @ D.conj().T - ls).abs().max() < 1e-13
        # a fixed magnetic field is not rotation invariant: the check can fail
        assert (D @ zeeman @ D.conj().T - zeeman).abs().max() > 1e-2


def test_spinful_wigner_layout_is_spin_major():
    R = random_rotation(5)
    shells = [0, 1]
    D = spinful_wigner(shells, R)
    U, Do = su2(R), wigner_D_shells(shells, R)
    n = 4
    for s in range(2):
        for t in range(2):
            assert torch.allclose(D[s * n:(s + 1) * n, t * n:(t + 1) * n], U[s, t] * Do.to(U.dtype))


def test_rotate_spinful_composes_and_accepts_numpy():
    rng = np.random.default_rng(0)
    rows, cols = [0, 1], [1, 2]
    B = rng.normal(size=(2, 8, 16)) + 1j * rng.normal(size=(2, 8, 16))
    R1, R2 = random_rotation(1), random_rotation(2, improper=True)
    once = rotate_spinful(B, rows, cols, R2 @ R1)
    twice = rotate_spinful(rotate_spinful(B, rows, cols, R1), rows, cols, R2)
    assert isinstance(once, np.ndarray) and once.shape == B.shape
    assert np.abs(once - twice).max() < 1e-12  # the SU(2) sign cancels in D H D^dagger
    t = rotate_spinful(torch.as_tensor(B), rows, cols, R1)
    assert isinstance(t, torch.Tensor) and np.abs(t.numpy() - rotate_spinful(B, rows, cols, R1)).max() < 1e-14


def test_time_reversal_operator():
    n = 5
    T = time_reversal_matrix(n)
    # Theta = T K: Theta^2 = T T^* = -1 for spin 1/2
    assert torch.allclose(T @ T.conj(), -torch.eye(2 * n, dtype=T.dtype))
    rng = np.random.default_rng(1)
    A = rng.normal(size=(6, 10)) + 1j * rng.normal(size=(6, 10))
    assert np.allclose(time_reverse(time_reverse(A)), A)  # an involution on blocks
    a, b, c, d = A[:3, :5], A[:3, 5:], A[3:, :5], A[3:, 5:]
    assert np.allclose(time_reverse(A), np.block([[d.conj(), -c.conj()], [-b.conj(), a.conj()]]))
    with pytest.raises(ValueError, match="even"):
        time_reverse(np.zeros((3, 4)))


def test_time_reversal_symmetric_and_breaking_hamiltonians():
    shells = [0, 1, 2]
    n = 9
    rng = np.random.default_rng(2)
    h0 = rng.normal(size=(n, n))
    h0 = h0 + h0.T
    H = np.kron(np.eye(2), h0) + 0.1 * l_dot_sigma(shells).numpy()
    assert np.abs(time_reverse(H) - H).max() < 1e-14
    zeeman = 0.01 * np.kron(pauli()[0].numpy(), np.eye(n))
    assert np.abs(time_reverse(H + zeeman) - (H + zeeman)).max() > 1e-2
    # an imaginary spin-independent hopping (orbital magnetism) also breaks T
    asym = rng.normal(size=(n, n))
    orb = 1j * np.kron(np.eye(2), asym - asym.T)
    assert np.abs(time_reverse(H + orb) - (H + orb)).max() > 1e-2
    # rotation and time reversal commute
    R = random_rotation(7, improper=True)
    Hz = H + zeeman
    assert np.abs(time_reverse(rotate_spinful(Hz, shells, shells, R)) - rotate_spinful(time_reverse(Hz), shells, shells, R)).max() < 1e-12
