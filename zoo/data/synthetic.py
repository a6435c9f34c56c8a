"""A synthetic, exactly equivariant two-centre Hamiltonian for tests and examples.

Not physics to learn from, but physics to test with: blocks are built from real spherical
harmonics of bond vectors through the Wigner-Eckart map, so rotating the structure rotates
every block by Wigner-D exactly, inversion acts with parity, H is hermitian, and S is
positive definite. Used wherever a test needs a Hamiltonian in seconds, and to write files in
another code's convention from a known rotated structure (importer tests). `toy_spinful_record`
is its spinful twin (complex SOC blocks, docs/adr/0006): SU(2)-equivariant and time-reversal symmetric.
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
from zoo.physics.spin import l_dot_sigma, orbital_angular_momentum_shells, pauli
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


def toy_spinful_record(structure: Structure, basis: BasisSet, cutoff: float, name: str = "toy-soc", seed: int = 0,
                       overlap: bool = True, soc_onsite: float = 0.05, soc_offsite: float = 0.5) -> Record:
    """The spinful twin of `toy_record`: complex (2n x 2n) blocks in the layout of docs/adr/0006.

        H_ii = I2 (x) H0_ii + sum_shells lambda_(Z_i, shell) (L.sigma)_shell
        H_ij = I2 (x) H0_ij + c sum_a sigma_a (x) (L_a^(i) M_ij + M_ij L_a^(j))        (i != j or R != 0)

    H0 is `toy_record`'s spinless H; M is a second, independent spinless two-centre term of the
    same kind (M_ji(-R) = M_ij(R)^T); L_a^(i) is the orbital angular momentum over atom i's shells
    (`zoo.physics.spin`); lambda_(Z, shell) = `soc_onsite` * a fixed pseudo-random number in
    [-1, 1) per element and shell; c = `soc_offsite`. Written as i B_a (x) sigma_a with
    B_a = -i (L_a M + M L_a) real, the off-site term is a two-centre spin-orbit coupling.

    Exact properties (the tests check them): every block rotates as D_s,i(R) H_ij D_s,j(R)^dagger
    for proper and improper R (L.sigma and sigma.L are invariant, M and H0 rotate by Wigner-D);
    time reversal T(H_ij) = H_ij (L and the sigma_a both flip sign under T); hermitian as a whole,
    H_ji(-R) = H_ij(R)^dagger. S (when `overlap`) is kron(I2, S0) stored complex, as the spinful
    format requires. n_electrons is the spinless record's (half filling of 2 sum(n_i) spin orbitals).
    """
    h0 = toy_record(structure, basis, cutoff, name=name, seed=seed, overlap=overlap)
    # an independent two-centre term: the same construction under another key, no overlap needed
    m = toy_record(structure, basis, cutoff, name=name, seed=repr(("soc", seed)), overlap=False)
    z = structure.numbers
    eye2 = np.eye(2)
    sig = pauli().numpy()
    l_ops: dict[int, np.ndarray] = {}
    onsite_soc: dict[int, np.ndarray] = {}
    for el in set(z.tolist()):
        shells = basis.element_shells(el)
        l_ops[el] = orbital_angular_momentum_shells(shells).numpy()
        onsite_soc[el] = sum(
            (soc_onsite * _coef("soc-onsite", seed, el, s)) * _embed_shell(l_dot_sigma([l]).numpy(), shells, s)
            for s, l in enumerate(shells)
        )

    h_on = [np.kron(eye2, b) + onsite_soc[int(z[a])] for a, b in enumerate(h0.onsite_blocks("H"))]
    h_off = []
    for (i, j), b0, mb in zip(h0.edge_index, h0.edge_blocks("H"), m.edge_blocks("H")):
        li, lj = l_ops[int(z[i])], l_ops[int(z[j])]
        soc = sum(np.kron(sig[a], li[a] @ mb + mb @ lj[a]) for a in range(3))
        h_off.append(np.kron(eye2, b0) + soc_offsite * soc)

    def flat(blocks):
        return np.concatenate([b.reshape(-1) for b in blocks]) if blocks else np.zeros(0, dtype=np.complex128)

    rec = Record(name, structure, basis, h0.edge_index, h0.edge_shift, flat(h_on).astype(np.complex128),
                 flat(h_off).astype(np.complex128), spinful=True, n_electrons=h0.n_electrons)
    if overlap:
        rec.s_onsite = flat([np.kron(eye2, b) for b in h0.onsite_blocks("S")]).astype(np.complex128)
        rec.s_offsite = flat([np.kron(eye2, b) for b in h0.edge_blocks("S")]).astype(np.complex128)
    rec.meta = {"generator": "zoo.data.synthetic.toy_spinful_record", "seed": seed,
                "soc_onsite": soc_onsite, "soc_offsite": soc_offsite}
    return rec


def _embed_shell(op: np.ndarray, shells, s: int) -> np.ndarray:
    """A spinful (2(2l+1))^2 operator on shell s placed into the spin-major (2n x 2n) block of all `shells`."""
    n = sum(2 * l + 1 for l in shells)
    o = sum(2 * l + 1 for l in shells[:s])
    d = 2 * shells[s] + 1
    out = np.zeros((2 * n, 2 * n), dtype=op.dtype)
    for a in range(2):
        for b in range(2):
            out[a * n + o:a * n + o + d, b * n + o:b * n + o + d] = op[a * d:(a + 1) * d, b * d:(b + 1) * d]
    return out
