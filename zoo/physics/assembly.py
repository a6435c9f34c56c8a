"""Blocks -> scipy.sparse matrices, at Gamma or at any k.

Blocks are *ragged and flat*: the block of atom pair (i, j) has shape (n_i, n_j), stored
row-major, blocks concatenated in edge order. Edge e couples orbital a of atom i in the home
cell with orbital b of atom j in the cell shifted by the integer lattice vector R = shift[e]
(ADR 0004). The Bloch sum is

    H_ab(k) = sum_R H_ab(R) exp(2 pi i k . R),   k in reduced (fractional) coordinates,

which is hermitian when the data hold both (i, j, R) and (j, i, -R) with H_ji(-R) = H_ij(R)^T.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp


def block_offsets(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Start of each flat block given its row/col sizes; last entry is the total length."""
    return np.concatenate([[0], np.cumsum(np.asarray(rows, np.int64) * np.asarray(cols, np.int64))])


def _coo_indices(row0: np.ndarray, col0: np.ndarray, nrow: np.ndarray, ncol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global (row, col) of every element of ragged row-major blocks, vectorised."""
    sizes = nrow * ncol
    total = int(sizes.sum())
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    local = np.arange(total, dtype=np.int64) - np.repeat(starts, sizes)
    nc = np.repeat(ncol, sizes)
    return np.repeat(row0, sizes) + local // nc, np.repeat(col0, sizes) + local % nc


def assemble(
    norb: Sequence[int],
    onsite: np.ndarray,
    edge_index: np.ndarray,
    edge_shift: np.ndarray,
    offsite: np.ndarray,
    k: Sequence[float] | None = None,
    hermitize: bool = False,
) -> sp.csr_matrix:
    """Sparse matrix at k (None = Gamma, real) from ragged flat on-site and edge blocks.

    `norb` is the orbital count per atom; `edge_index` [E, 2] (i, j); `edge_shift` [E, 3] ints.
    """
    norb = np.asarray(norb, dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(norb)])
    n = int(off[-1])
    ei = np.asarray(edge_index, dtype=np.int64).reshape(-1, 2)
    atoms = np.arange(len(norb))
    r0, c0 = _coo_indices(off[atoms], off[atoms], norb, norb)
    r1, c1 = _coo_indices(off[ei[:, 0]], off[ei[:, 1]], norb[ei[:, 0]], norb[ei[:, 1]])
    vals_on = np.asarray(onsite)
    vals_off = np.asarray(offsite)
    if k is not None and np.any(np.asarray(k) != 0):
        phase = np.exp(2j * np.pi * (np.asarray(edge_shift, dtype=np.float64) @ np.asarray(k, dtype=np.float64)))
        vals_off = vals_off * np.repeat(phase, norb[ei[:, 0]] * norb[ei[:, 1]])
        vals_on = vals_on.astype(np.complex128)
    m = sp.coo_matrix(
        (np.concatenate([vals_on, vals_off]), (np.concatenate([r0, r1]), np.concatenate([c0, c1]))), shape=(n, n)
    ).tocsr()  # duplicates (several images of one pair) are summed: the Bloch sum
    return hermitize_matrix(m) if hermitize else m


def hermitize_matrix(m):
    """(M + M^H) / 2 for dense or sparse M."""
    return (m + m.conj().T) * 0.5


def spinful_index(index_of: dict, n_max: int) -> dict:
    """Padded positions of each element's spinful orbitals (docs/adr/0006).

    The spinful padded layout is the spinless slot layout repeated for each spin, spin-major:
    an element's up orbitals sit at `index_of[z]`, its down orbitals at `index_of[z] + n_max`,
    in a padded width of 2 n_max; flat spinful blocks list up orbitals (basis order) then down.
    """
    return {z: np.concatenate([ix, ix + n_max]) for z, ix in index_of.items()}


def pad_blocks(blocks: np.ndarray, index_of: dict, z_rows: np.ndarray, z_cols: np.ndarray, n_max: int,
               spinful: bool = False) -> np.ndarray:
    """Ragged flat blocks -> padded [B, n_max, n_max] in the slot layout (zeros in padding).

    `index_of[z]` gives the padded positions of element z's orbitals (OrbitalLayout.index);
    block b couples an atom of element z_rows[b] with one of z_cols[b]. With `spinful` the
    blocks are (2 n_i x 2 n_j) spin-major and the result is [B, 2 n_max, 2 n_max] (`spinful_index`).
    """
    if spinful:
        index_of, n_max = spinful_index(index_of, n_max), 2 * n_max
    z_rows, z_cols = np.asarray(z_rows), np.asarray(z_cols)
    blocks = np.asarray(blocks)
    rows = np.array([len(index_of[int(z)]) for z in z_rows], dtype=np.int64)
    cols = np.array([len(index_of[int(z)]) for z in z_cols], dtype=np.int64)
    offs = block_offsets(rows, cols)
    if offs[-1] != blocks.size:
        raise ValueError(f"{blocks.size} block values for blocks needing {offs[-1]}")
    out = np.zeros((len(z_rows), n_max, n_max), dtype=blocks.dtype)
    for zi, zj in set(zip(z_rows.tolist(), z_cols.tolist())):
        idx = np.flatnonzero((z_rows == zi) & (z_cols == zj))
        ii, jj = index_of[zi], index_of[zj]
        flat = blocks[offs[idx][:, None] + np.arange(len(ii) * len(jj))[None, :]]
        out[idx[:, None, None], ii[None, :, None], jj[None, None, :]] = flat.reshape(len(idx), len(ii), len(jj))
    return out


def unpad_blocks(padded: np.ndarray, index_of: dict, z_rows: np.ndarray, z_cols: np.ndarray,
                 spinful: bool = False) -> np.ndarray:
    """Inverse of `pad_blocks`: padded [B, n_max, n_max] -> ragged flat (padding dropped).

    With `spinful`, padded is [B, 2 n_max, 2 n_max] in the spinful layout (`spinful_index`).
    """
    if spinful:
        if padded.shape[-1] % 2:
            raise ValueError(f"spinful padded blocks need an even width, got {padded.shape[-1]}")
        index_of = spinful_index(index_of, padded.shape[-1] // 2)
    z_rows, z_cols = np.asarray(z_rows), np.asarray(z_cols)
    rows = np.array([len(index_of[int(z)]) for z in z_rows], dtype=np.int64)
    cols = np.array([len(index_of[int(z)]) for z in z_cols], dtype=np.int64)
    offs = block_offsets(rows, cols)
    out = np.zeros(int(offs[-1]), dtype=padded.dtype)
    for zi, zj in set(zip(z_rows.tolist(), z_cols.tolist())):
        idx = np.flatnonzero((z_rows == zi) & (z_cols == zj))
        ii, jj = index_of[zi], index_of[zj]
        vals = padded[idx][:, ii][:, :, jj].reshape(len(idx), -1)
        out[offs[idx][:, None] + np.arange(vals.shape[1])[None, :]] = vals
    return out
