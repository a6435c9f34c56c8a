"""Wigner-Eckart transform: orthonormal, round-trips, commutes with rotation."""

import numpy as np
import pytest
import torch

from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.coupling import WignerEckart, block_to_coupled, coupled_to_block, coupling_matrix
from zoo.physics.wigner import random_rotation, wigner_D, wigner_D_shells


@pytest.mark.parametrize("l1,l2", [(0, 0), (0, 2), (1, 1), (1, 2), (2, 2), (2, 3), (3, 3)])
def test_coupling_is_orthogonal_and_equivariant(l1, l2):
    q = coupling_matrix(l1, l2)
    np.testing.assert_allclose(q.T @ q, np.eye(q.shape[0]), atol=1e-12)
    b = np.random.default_rng(0).normal(size=(2 * l1 + 1, 2 * l2 + 1))
    np.testing.assert_allclose(coupled_to_block(block_to_coupled(b, l1, l2), l1, l2), b, atol=1e-12)
    R = random_rotation(5)
    rotated = wigner_D(l1, R).numpy() @ b @ wigner_D(l2, R).numpy().T
    c, c_rot = block_to_coupled(b, l1, l2), block_to_coupled(rotated, l1, l2)
    o = 0
    for L in range(abs(l1 - l2), l1 + l2 + 1):
        np.testing.assert_allclose(c_rot[o:o + 2 * L + 1], wigner_D(L, R).numpy() @ c[o:o + 2 * L + 1], atol=1e-10)
        o += 2 * L + 1


def test_layout_transform_round_trip_and_rotation():
    layout = OrbitalLayout(get_basis("def2-svp"), [1, 8])
    we = WignerEckart(layout).double()
    assert we.irreps.dim == layout.n_max ** 2
    b = torch.randn(4, layout.n_max, layout.n_max, dtype=torch.float64)
    torch.testing.assert_close(we.to_blocks(we.to_coupled(b)), b)
    R = random_rotation(9, improper=True)
    D = wigner_D_shells(layout.slot_ls, R)
    coupled = we.to_coupled(b)
    # rotating blocks == rotating coupled irreps with e3nn's irreps D (parity included)
    from zoo.physics.wigner import _P
    Re = _P.double() @ R @ _P.double().T
    torch.set_default_dtype(torch.float64)  # e3nn builds D in the default dtype (restored by conftest)
    torch.testing.assert_close(we.to_coupled(D @ b @ D.T), coupled @ we.irreps.D_from_matrix(Re).T, atol=1e-10, rtol=0)
    # MSE in coupled space equals MSE in block space
    e = torch.randn_like(b)
    torch.testing.assert_close((we.to_coupled(e) ** 2).sum(), (e ** 2).sum())


def test_pair_mask_covers_element_orbitals():
    layout = OrbitalLayout(get_basis("szv-molopt-sr"), [8, 72])
    we = WignerEckart(layout)
    assert int(we.pair_mask(8, 8).sum()) == 16
    assert int(we.pair_mask(72, 8).sum()) == 40
    assert int(we.pair_mask(72, 72).sum()) == 100
