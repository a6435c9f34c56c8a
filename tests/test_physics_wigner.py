"""Wigner-D, spherical harmonics and the internal convention's named functions."""

import numpy as np
import pytest
import torch

from zoo.physics.conventions import FUNCTIONS
from zoo.physics.wigner import random_rotation, spherical_harmonics, wigner_D, wigner_D_shells


def racah(name: str, r: np.ndarray) -> np.ndarray:
    """Racah-normalised real solid harmonics with positive leading coefficient (textbook formulas)."""
    x, y, z = r.T
    r2 = x * x + y * y + z * z
    s3, s15 = np.sqrt(3), np.sqrt(15)
    table = {
        "s": np.ones_like(x), "py": y, "pz": z, "px": x,
        "dxy": s3 * x * y, "dyz": s3 * y * z, "dz2": 0.5 * (3 * z * z - r2), "dxz": s3 * x * z,
        "dx2-y2": 0.5 * s3 * (x * x - y * y),
        "fy(3x2-y2)": np.sqrt(5 / 8) * y * (3 * x * x - y * y), "fxyz": s15 * x * y * z,
        "fyz2": np.sqrt(3 / 8) * y * (5 * z * z - r2), "fz3": 0.5 * z * (5 * z * z - 3 * r2),
        "fxz2": np.sqrt(3 / 8) * x * (5 * z * z - r2), "fz(x2-y2)": 0.5 * s15 * z * (x * x - y * y),
        "fx(x2-3y2)": np.sqrt(5 / 8) * x * (x * x - 3 * y * y),
    }
    return table[name]


@pytest.mark.parametrize("l", [0, 1, 2, 3])
def test_internal_harmonics_are_the_named_functions(l):
    r = np.random.default_rng(l).normal(size=(50, 3))
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    y = spherical_harmonics(l, torch.as_tensor(r)).numpy()
    for name, (fl, m) in FUNCTIONS.items():
        if fl == l:
            np.testing.assert_allclose(y[:, m + l], np.sqrt(2 * l + 1) * racah(name, r), atol=1e-12, err_msg=name)


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("l", [0, 1, 2, 3, 4])
def test_wigner_is_a_representation(l, improper):
    r1, r2 = random_rotation(1, improper), random_rotation(2)
    torch.testing.assert_close(wigner_D(l, r1 @ r2), wigner_D(l, r1) @ wigner_D(l, r2), atol=1e-12, rtol=0)
    d = wigner_D(l, r1)
    torch.testing.assert_close(d @ d.T, torch.eye(2 * l + 1, dtype=d.dtype), atol=1e-12, rtol=0)


@pytest.mark.parametrize("l", [1, 2, 3])
def test_harmonics_rotate_with_wigner(l):
    R = random_rotation(7)
    r = torch.randn(20, 3, dtype=torch.float64)
    torch.testing.assert_close(spherical_harmonics(l, r @ R.T), spherical_harmonics(l, r) @ wigner_D(l, R).T,
                               atol=1e-12, rtol=0)


def test_parity_of_inversion():
    for l in range(4):
        torch.testing.assert_close(wigner_D(l, -torch.eye(3, dtype=torch.float64)),
                                   (-1) ** l * torch.eye(2 * l + 1, dtype=torch.float64))


def test_l1_is_py_pz_px():
    R = random_rotation(3)
    torch.testing.assert_close(wigner_D(1, R), R[[1, 2, 0]][:, [1, 2, 0]], atol=1e-12, rtol=0)


def test_block_diagonal_over_shells():
    R = random_rotation(4)
    D = wigner_D_shells([0, 1, 2], R)
    assert D.shape == (9, 9)
    torch.testing.assert_close(D[4:, 4:], wigner_D(2, R))
    assert float(D[:4, 4:].abs().max()) == 0.0
