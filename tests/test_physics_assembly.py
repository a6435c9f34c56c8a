"""Sparse assembly vs dense, Bloch sums, spectra helpers."""

import numpy as np
import scipy.sparse as sp

from zoo.physics.assembly import assemble, hermitize_matrix, pad_blocks, unpad_blocks
from zoo.physics import spectra


def random_blocks(rng, norb, edges, shifts):
    on = np.concatenate([(lambda a: (a + a.T).reshape(-1))(rng.normal(size=(n, n))) for n in norb])
    return on


def test_sparse_equals_dense_and_bloch_sum():
    rng = np.random.default_rng(0)
    norb = np.array([1, 4, 9, 4])
    off = np.concatenate([[0], np.cumsum(norb)])
    n = off[-1]
    # edges with image shifts, both directions, H_ji(-R) = H_ij(R)^T
    pairs = [(0, 1, (0, 0, 0)), (1, 2, (1, 0, 0)), (2, 3, (0, -1, 0)), (0, 0, (0, 0, 1)), (3, 1, (1, 1, 0))]
    ei, sh, blocks = [], [], []
    for i, j, s in pairs:
        b = rng.normal(size=(norb[i], norb[j]))
        ei += [(i, j), (j, i)]
        sh += [s, tuple(-np.array(s))]
        blocks += [b, b.T]
    on_blocks = [(lambda a: a + a.T)(rng.normal(size=(k, k))) for k in norb]
    on = np.concatenate([b.reshape(-1) for b in on_blocks])
    offv = np.concatenate([b.reshape(-1) for b in blocks])
    k = np.array([0.1, 0.25, -0.3])
    dense_g = np.zeros((n, n))
    dense_k = np.zeros((n, n), dtype=complex)
    for a, b in enumerate(on_blocks):
        dense_g[off[a]:off[a + 1], off[a]:off[a + 1]] += b
        dense_k[off[a]:off[a + 1], off[a]:off[a + 1]] += b
    for (i, j), s, b in zip(ei, sh, blocks):
        dense_g[off[i]:off[i + 1], off[j]:off[j + 1]] += b
        dense_k[off[i]:off[i + 1], off[j]:off[j + 1]] += b * np.exp(2j * np.pi * np.dot(k, s))
    hg = assemble(norb, on, np.array(ei), np.array(sh), offv)
    hk = assemble(norb, on, np.array(ei), np.array(sh), offv, k=k)
    assert sp.issparse(hg)
    np.testing.assert_allclose(hg.toarray(), dense_g)
    np.testing.assert_allclose(hk.toarray(), dense_k)
    np.testing.assert_allclose(hk.toarray(), hk.toarray().conj().T, atol=1e-12)  # hermitian at any k
    np.testing.assert_allclose(spectra.eigh(hg), np.linalg.eigvalsh(dense_g), atol=1e-10)
    np.testing.assert_allclose(spectra.eigh(hk), np.linalg.eigvalsh(dense_k), atol=1e-10)


def test_sparse_shift_invert_matches_dense():
    rng = np.random.default_rng(2)
    a = sp.random(300, 300, density=0.02, random_state=3) + sp.eye(300) * 0.1
    h = hermitize_matrix(a).tocsr()
    s = sp.eye(300) + hermitize_matrix(sp.random(300, 300, density=0.005, random_state=4)) * 0.1
    dense = spectra.eigh(h, s)
    near = spectra.eigh_near(h, s, sigma=0.05, k=10)
    expect = np.sort(dense[np.argsort(np.abs(dense - 0.05))[:10]])
    np.testing.assert_allclose(near, expect, atol=1e-8)


def test_fermi_gap_dos():
    eigs = np.array([-1.0, -0.5, 0.2, 0.9])
    assert spectra.fermi_level(eigs, 4) == (-0.5 + 0.2) / 2
    assert np.isclose(spectra.band_gap(eigs, 4), 0.7)
    mu = spectra.fermi_level(eigs, 4, kT=0.01)
    assert -0.5 < mu < 0.2
    grid = np.linspace(-3, 3, 20001)
    total = np.trapezoid(spectra.dos(eigs, grid, sigma=0.05), grid)
    assert np.isclose(total, 8.0, atol=1e-6)  # 4 states x 2 spins


def test_pad_unpad_round_trip():
    index_of = {8: np.array([0, 2, 3, 4]), 72: np.arange(10)}
    z_rows, z_cols = np.array([8, 72, 8]), np.array([72, 8, 8])
    flat = np.arange(40 + 40 + 16, dtype=float)
    pad = pad_blocks(flat, index_of, z_rows, z_cols, 10)
    assert pad.shape == (3, 10, 10) and pad[0, 1].sum() == 0  # O has no second s
    np.testing.assert_array_equal(unpad_blocks(pad, index_of, z_rows, z_cols), flat)
