"""Each code's convention row: a signed permutation that maps a rotated block correctly."""

import numpy as np
import pytest

from zoo.errors import ConventionError
from zoo.physics.conventions import (CONVENTIONS, FUNCTIONS, atom_transform, block_from_internal, block_to_internal,
                                     get_convention, orbital_permutation)
from zoo.physics.wigner import random_rotation, wigner_D_shells
from tests.test_physics_wigner import racah

SHELLS_I, SHELLS_J = (0, 1, 2, 3), (0, 2, 1)


def code_functions(conv, shells, r):
    """Basis-function values in the code's own order and signs: code[k] = sign_k * named_k."""
    cols = []
    for l in shells:
        for name, sg in zip(conv.order[l], conv.signs[l]):
            cols.append(sg * racah(name, r))
    return np.stack(cols, axis=1)


def code_block(conv, ti, tj, pts, shells_i, shells_j):
    """A genuine two-centre matrix element of a local potential, sampled on points, in the code's basis."""
    fi = code_functions(conv, shells_i, pts - ti) * np.exp(-np.sum((pts - ti) ** 2, 1))[:, None]
    fj = code_functions(conv, shells_j, pts - tj) * np.exp(-np.sum((pts - tj) ** 2, 1))[:, None]
    v = np.exp(-0.3 * np.sum(pts ** 2, 1))  # a rotation-invariant potential about the origin
    return (fi * v[:, None]).T @ fj


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_converted_blocks_rotate_with_wigner(name):
    conv = get_convention(name)
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(4000, 3)) * 1.5
    ti, tj = np.array([0.3, -0.2, 0.5]), np.array([-0.6, 0.4, -0.1])
    R = random_rotation(11).numpy()
    b = block_to_internal(code_block(conv, ti, tj, pts, SHELLS_I, SHELLS_J), SHELLS_I, SHELLS_J, name)
    # rotating centres and the sample points is rotating the physical system
    b_rot = block_to_internal(code_block(conv, R @ ti, R @ tj, pts @ R.T, SHELLS_I, SHELLS_J), SHELLS_I, SHELLS_J, name)
    di, dj = wigner_D_shells(SHELLS_I, R).numpy(), wigner_D_shells(SHELLS_J, R).numpy()
    np.testing.assert_allclose(b_rot, di @ b @ dj.T, atol=1e-9 * np.abs(b).max())
    # and the wrong convention does not (unless the rows coincide)
    if name not in ("internal", "e3nn", "deeptb", "xtb", "cp2k", "gpaw"):
        wrong = block_to_internal(code_block(conv, R @ ti, R @ tj, pts @ R.T, SHELLS_I, SHELLS_J), SHELLS_I, SHELLS_J, "internal")
        assert np.abs(wrong - di @ block_to_internal(code_block(conv, ti, tj, pts, SHELLS_I, SHELLS_J), SHELLS_I, SHELLS_J, "internal") @ dj.T).max() > 1e-3


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_rows_are_signed_permutations(name):
    for l in range(4):
        t = atom_transform([l], name)
        np.testing.assert_allclose(t @ t.T, np.eye(2 * l + 1))
        assert set(np.abs(t).sum(0)) == {1.0}
    perm, sign = orbital_permutation([0, 1, 2], name)
    v = np.arange(9.0) + 1
    np.testing.assert_allclose(sign * v[perm], atom_transform([0, 1, 2], name) @ v)


def test_round_trip_and_errors():
    b = np.random.default_rng(1).normal(size=(9, 4))
    back = block_from_internal(block_to_internal(b, (0, 1, 2), (0, 1), "orca"), (0, 1, 2), (0, 1), "orca")
    np.testing.assert_allclose(back, b)
    with pytest.raises(ConventionError, match="unknown orbital convention"):
        get_convention("vasp")


def test_function_table_is_complete():
    for l in range(4):
        assert sorted(m for fl, m in FUNCTIONS.values() if fl == l) == list(range(-l, l + 1))
