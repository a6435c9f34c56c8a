"""A synthetic, exactly equivariant two-centre Hamiltonian for tests and examples.

Not physics to learn from, but physics to test with: blocks are built from real spherical
harmonics of bond vectors through the Wigner-Eckart map, so rotating the structure rotates
every block by Wigner-D exactly, inversion acts with parity, H is hermitian, and S is
positive definite. Used wherever a test needs a Hamiltonian in seconds, and to write files in
another code's convention from a known rotated structure (importer tests).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from zoo.data.format import Record, Structure
from zoo.data.graph import edge_vectors_np, neighbor_graph
from zoo.physics.assembly import block_offsets
from zoo.physics.basis import BasisSet
from zoo.physics.coupling import coupling_matrix
from zoo.physics.wigner import spherical_harmonics


def _coef(*key) -> float:
    """Deterministic pseudo-random number in [-1, 1) from a key (independent of call order)."""
    h = hashlib.sha256(repr(key).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**63 - 1.0


def _sh(l: int, vec: np.ndarray) -> np.ndarray:
    return spherical_harmonics(l, torch.as_tensor(vec, dtype=torch.float64)).numpy()


def _two_centre(zi, zj, shells_i, shells_j, vec, tag, scale, decay, seed):
    """[E, n_i, n_j] blocks for edges of one element pair."""
    d = np.linalg.norm(vec, axis=1)
    ni, nj = sum(2 * l + 1 for l in shells_i), sum(2 * l + 1 for l in shells_j)
    out = np.zeros((len(vec), ni, nj))
    oi = 0
    for a, la in enumerate(shells_i):
        oj = 0
        for b, lb in enumerate(shells_j):
            q = coupling_matrix(la, lb)
            col = 0
            for L in range(abs(la - lb), la + lb + 1):
                if (-1) ** L == (-1) ** (la + lb):  # parity a single vector can carry
                    amp = scale * _coef(tag, seed, zi, zj, a, b, L)
                    rad = amp * np.exp(-d / decay) * (1 + 0.3 * _coef(tag, seed, zi, zj, a, b, L, "r") * d)
                    c = rad[:, None] * _sh(L, vec)
                    blk = c @ q[:, col:col + 2 * L + 1].T
                    out[:, oi:oi + 2 * la + 1, oj:oj + 2 * lb + 1] += blk.reshape(-1, 2 * la + 1, 2 * lb + 1)
                col += 2 * L + 1
            oj += 2 * lb + 1
        oi += 2 * la + 1
    return out


def _sym_pair_key(zi, zj):
    return (min(zi, zj), max(zi, zj))


def toy_record(structure: Structure, basis: BasisSet, cutoff: float, name: str = "toy", seed: int = 0,
               overlap: bool = True) -> Record:
    """Equivariant hermitian H (and positive-definite S) for `structure` within `cutoff`."""
    z = structure.numbers
    ei, sh = neighbor_graph(z, structure.positions, structure.cell, structure.pbc, cutoff)
    vec = edge_vectors_np(structure.positions, structure.cell, ei, sh)
    norb = basis.norb_per_atom(z)
    n_e = len(ei)

    def edge_blocks(tag, scale, decay):
        blocks = [None] * n_e
        zi_e, zj_e = z[ei[:, 0]], z[ei[:, 1]]
        for zi, zj in set(zip(zi_e.tolist(), zj_e.tolist())):
            idx = np.flatnonzero((zi_e == zi) & (zj_e == zj))
            # H_ji(-r) = H_ij(r)^T: build from the ordered pair (lo, hi) and transpose for the other
            lo, hi = _sym_pair_key(zi, zj)
            if zi == zj:
                sl = basis.element_shells(zi)
                b = _two_centre(zi, zi, sl, sl, vec[idx], tag, scale, decay, seed)
                b = 0.5 * (b + _two_centre(zi, zi, sl, sl, -vec[idx], tag, scale, decay, seed).transpose(0, 2, 1))
            elif (zi, zj) == (lo, hi):
                b = _two_centre(lo, hi, basis.element_shells(lo), basis.element_shells(hi), vec[idx], tag, scale, decay, seed)
            else:
                b = _two_centre(lo, hi, basis.element_shells(lo), basis.element_shells(hi), -vec[idx], tag, scale, decay, seed)
                b = b.transpose(0, 2, 1)
            for k, e in enumerate(idx):
                blocks[e] = b[k]
        return blocks

    def onsite_blocks(tag, diag_scale, env_scale):
        blocks = []
        env = np.zeros((len(z),), dtype=object)
        for a in range(len(z)):
            shells = basis.element_shells(z[a])
            n = norb[a]
            diag = np.concatenate([[diag_scale * _coef(tag, seed, z[a], s)] * (2 * l + 1) for s, l in enumerate(shells)])
            env[a] = np.diag(diag) if tag == "H" else np.eye(n)
        # environment: sum over neighbours of an even-parity two-centre term, symmetrized
        for zi in set(z.tolist()):
            idx = np.flatnonzero(z[ei[:, 0]] == zi)
            if not len(idx):
                continue
            shells = basis.element_shells(zi)
            t = _two_centre(zi, zi, shells, shells, vec[idx], tag + "env", env_scale, 1.5, seed)
            for k, e in enumerate(idx):
                env[ei[e, 0]] = env[ei[e, 0]] + 0.5 * (t[k] + t[k].T)
        return [np.asarray(b) for b in env]

    h_on = onsite_blocks("H", 0.5, 0.02)
    h_off = edge_blocks("H", 0.2, 2.0)
    rec = Record(name, structure, basis, ei, sh,
                 np.concatenate([b.reshape(-1) for b in h_on]),
                 np.concatenate([b.reshape(-1) for b in h_off]) if n_e else np.zeros(0))
    if overlap:
        s_off = edge_blocks("S", 1.0, 1.0)
        s_off_flat = np.concatenate([b.reshape(-1) for b in s_off]) if n_e else np.zeros(0)
        s_on_flat = np.concatenate([np.eye(n).reshape(-1) for n in norb])
        rec.s_onsite, rec.s_offsite = s_on_flat, s_off_flat
        # keep S positive definite: shrink the off-site part until the smallest eigenvalue >= 0.2
        for _ in range(30):
            if structure.n_atoms > 400 or np.linalg.eigvalsh(rec.matrix("S").toarray()).min() >= 0.2:
                break
            rec.s_offsite = rec.s_offsite * 0.5
    rec.n_electrons = float(sum(norb))  # half filling
    rec.meta = {"generator": "zoo.data.synthetic.toy_record", "seed": seed}
    return rec
