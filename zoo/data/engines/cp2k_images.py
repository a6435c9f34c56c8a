"""Per-image (real-space) matrices H(R), S(R) of a CP2K k-point run, mapped onto zoo's edge list.

With `&KPOINTS` (SCHEME GAMMA is enough) and `REAL_SPACE T` on `&KS_CSR_WRITE` / `&S_CSR_WRITE`,
CP2K 2023.1 writes one triplet file per lattice image, `<project>-KS_SPIN_1_R_<n>-1_0.csr` (and
`-S_`), and prints the table n -> (X, Y, Z) after "KS CSR write| <N> periodic images". Measured
here (Si2 and 12-atom m-HfO2 cells; tests/test_engine_cp2k.py):

- file n holds the full matrix M_R[mu, nu] = <mu of atom i in the home cell | M | nu of atom j in
  cell R>, atom j displaced by X a + Y b + Z c (cell rows a, b, c): zoo's shift convention;
- R refers to CP2K's *wrapped* positions: each fractional coordinate s becomes s - ANINT(s), in
  [-0.5, 0.5] (moving an atom by a lattice vector leaves every file unchanged). The engine writes
  the positions already wrapped (`wrapped_positions`), so zoo's shift of (i, j, R) is
  R + w_j - w_i for the lattice translations w it applied;
- the images are those of CP2K's orbital neighbour list (pairs whose basis functions overlap above
  EPS_DEFAULT), not a distance cutoff: blocks of pairs beyond it are exactly zero in CP2K's model;
- M_R = M_{-R}^T exactly, and sum_R M_R equals the Gamma-point matrix of a Gamma-only run of the
  same cell to SCF precision (1e-9 Ha measured on Si2; S to 1e-13).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from zoo.data.engines.base import EngineError, orbital_reorder
from zoo.data.format import Record, Structure
from zoo.data.graph import edge_vectors_np, neighbor_graph
from zoo.errors import DataError
from zoo.physics.assembly import _coo_indices, block_offsets
from zoo.physics.basis import BasisSet

#: fractional distance kept from the +-0.5 faces of CP2K's wrapping window: an atom exactly on a
#: face would be wrapped by CP2K to either side (ANINT of 0.5 +- rounding). 1e-8 of a cell edge
#: (< 1e-6 A) moves H by ~1e-9 Ha, below the SCF tolerance.
FACE_MARGIN = 1e-8
MATRICES = ("KS", "S")  # CP2K's file tags for H and S


def wrapped_positions(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    """(positions to write, w): every atom moved by the lattice translation w_i (ints, [N, 3])
    that puts its fractional coordinates in CP2K's wrapping window [-0.5, 0.5), kept FACE_MARGIN
    inside the faces so that CP2K's own wrap leaves them where they are."""
    cell = np.asarray(structure.cell, dtype=float)
    frac = np.asarray(structure.positions, dtype=float) @ np.linalg.inv(cell)
    w = -np.floor(frac + 0.5)
    inside = np.clip(frac + w, -0.5 + FACE_MARGIN, 0.5 - FACE_MARGIN)
    return inside @ cell, w.astype(np.int64)


def image_table(log: str, which: str) -> dict[int, tuple[int, int, int]]:
    """{file number: (X, Y, Z)} from the table CP2K prints after '<which> CSR write| N periodic images'."""
    found = re.search(rf"\b{which} CSR write\|\s+(\d+) periodic images\s*\n\s*Number\s+X\s+Y\s+Z\s*\n", log)
    if found is None:
        raise EngineError(f"CP2K's output has no '{which} CSR write| ... periodic images' table (was REAL_SPACE "
                          f"printing on and the run a k-point run?)")
    n = int(found.group(1))
    rows = log[found.end():].splitlines()[:n]
    table: dict[int, tuple[int, int, int]] = {}
    for row in rows:
        parts = row.split()
        if len(parts) != 4 or not all(re.fullmatch(r"-?\d+", p) for p in parts):
            raise EngineError(f"CP2K's {which} image table is cut short after {len(table)} of {n} rows: {row!r}")
        table[int(parts[0])] = (int(parts[1]), int(parts[2]), int(parts[3]))
    return table


def image_file(work: Path, project: str, which: str, number: int) -> Path:
    return work / f"{project}-{which}_SPIN_1_R_{number}-1_0.csr"


class _Edges:
    """The zoo edge list within the cutoff and where each edge's values go in the flat block arrays."""

    def __init__(self, structure: Structure, norb: np.ndarray, w: np.ndarray, cutoff: float):
        self.ei, self.shift = neighbor_graph(structure.numbers, structure.positions, structure.cell, structure.pbc,
                                             cutoff)
        i, j = self.ei[:, 0], self.ei[:, 1]
        self.cp2k_image = self.shift - w[j] + w[i]  # CP2K's R for each zoo edge
        self.sizes = norb[i] * norb[j]
        self.starts = block_offsets(norb[i], norb[j])
        self.n_atoms = len(norb)
        self.bound = int(max(np.abs(self.shift).max(initial=0), 1)) + 1
        self.keys = self.key(i, j, self.shift)

    def key(self, i: np.ndarray, j: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """One int64 per (i, j, shift) for |shift| < bound (larger shifts get keys no edge has)."""
        b = 2 * self.bound + 1
        s = np.clip(shift + self.bound, 0, b - 1)
        return ((i * self.n_atoms + j) * b + s[:, 0]) * b * b + s[:, 1] * b + s[:, 2]

    def contains(self, i: np.ndarray, j: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Whether each (i, j, shift) is one of the edges."""
        return (np.abs(shift) < self.bound).all(axis=1) & np.isin(self.key(i, j, shift), self.keys)


def _flat_positions(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Flat indices starts[e] + 0..sizes[e]-1 of the selected blocks, concatenated."""
    local = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.repeat(starts, sizes) + local


def images_to_record(structure: Structure, work: Path, project: str, log: str, basis: BasisSet, convention: str,
                     w: np.ndarray, cutoff: float, name: str, n_electrons: float | None = None,
                     meta: dict | None = None) -> Record:
    """Record with image_convention "explicit" from CP2K's per-image files in `work`: on-site
    blocks from R = 0, one edge per (i, j, shift) within `cutoff` (zero blocks where CP2K's
    neighbour list has no such pair), read one image at a time (memory: one image's triplets).

    Adds to the record's meta what the cutoff keeps of CP2K's matrices: `kept_frac_frobenius_h`
    (||H kept||_F / ||H||_F over all images), `dropped_frac_frobenius_h`, `dropped_max_abs_h` /
    `_s`, `cp2k_images`, `cp2k_longest_pair_A` (the farthest pair CP2K's lists hold) and
    `edges_without_cp2k_block` (edges within the cutoff beyond those lists)."""
    from zoo.data.importers.cp2k import read_triplets

    tables = {which: image_table(log, which) for which in MATRICES}
    if tables["KS"] != tables["S"]:
        raise EngineError(f"CP2K printed different image tables for KS ({len(tables['KS'])} images) and S "
                          f"({len(tables['S'])})")
    table = tables["KS"]
    if (0, 0, 0) not in table.values():
        raise EngineError(f"CP2K's image table ({len(table)} images) lacks the home cell R = (0, 0, 0)")
    numbers = np.asarray(structure.numbers)
    norb = basis.norb_per_atom(numbers)
    n = int(norb.sum())
    perm, sign = orbital_reorder(numbers, basis, convention)
    to_int = np.argsort(perm)  # code orbital -> internal orbital
    atom_of = np.repeat(np.arange(len(numbers)), norb)  # internal orbital -> atom
    off = np.concatenate([[0], np.cumsum(norb)])
    edges = _Edges(structure, norb, w, cutoff)
    atoms = np.arange(len(numbers))
    onsite = {m: np.zeros(int((norb * norb).sum())) for m in MATRICES}
    offsite = {m: np.zeros(int(edges.sizes.sum())) for m in MATRICES}
    total2 = dropped2 = 0.0
    dropped_max = {m: 0.0 for m in MATRICES}
    longest = 0.0
    has_block = np.zeros(len(edges.sizes), dtype=bool)  # the edge's pair is in CP2K's lists
    for number, image in table.items():
        rvec = np.asarray(image, dtype=np.int64)
        sel = np.flatnonzero((edges.cp2k_image == rvec).all(axis=1))
        for m in MATRICES:
            path = image_file(work, project, m, number)
            try:
                r, c, v = read_triplets(path, n, index_base=1, mirror=False)
            except DataError as exc:
                raise EngineError(f"reading CP2K's image {image} matrix: {exc}") from None
            a, b = to_int[r], to_int[c]
            v = v * sign[a] * sign[b]
            mat = sp.csr_matrix((v, (a, b)), shape=(n, n))
            if sel.size:
                i, j = edges.ei[sel, 0], edges.ei[sel, 1]
                ri, ci = _coo_indices(off[i], off[j], norb[i], norb[j])
                offsite[m][_flat_positions(edges.starts[sel], edges.sizes[sel])] = np.asarray(mat[ri, ci]).ravel()
            if not rvec.any():
                ri, ci = _coo_indices(off[atoms], off[atoms], norb, norb)
                onsite[m][:] = np.asarray(mat[ri, ci]).ravel()
            # what the cutoff keeps of this image: its on-site blocks (R = 0) and zoo's edges
            ai, aj = atom_of[a], atom_of[b]
            shift = rvec + w[aj] - w[ai]
            kept = edges.contains(ai, aj, shift) | ((ai == aj) & ~shift.any(axis=1))
            dropped_max[m] = max(dropped_max[m], float(np.abs(v[~kept]).max(initial=0.0)))
            if m == "KS":
                total2 += float(v @ v)
                dropped2 += float(v[~kept] @ v[~kept])
                has_block[sel] = np.isin(edges.ei[sel, 0] * len(numbers) + edges.ei[sel, 1], ai * len(numbers) + aj)
                pair = np.unique(ai[v != 0] * len(numbers) + aj[v != 0])
                if pair.size:
                    pairs = np.stack(np.divmod(pair, len(numbers)), axis=1)
                    sh = rvec + w[pairs[:, 1]] - w[pairs[:, 0]]
                    d = np.linalg.norm(edge_vectors_np(structure.positions, structure.cell, pairs, sh), axis=1)
                    longest = max(longest, float(d.max()))
    dropped_frac = float(np.sqrt(dropped2 / total2)) if total2 > 0 else 0.0
    stats = {"image_source": "cp2k per-image (REAL_SPACE) matrices", "cp2k_images": len(table),
             "cp2k_longest_pair_A": round(longest, 3), "edges_without_cp2k_block": int((~has_block).sum()),
             "kept_frac_frobenius_h": float(np.sqrt(max(1.0 - dropped_frac ** 2, 0.0))),
             "dropped_frac_frobenius_h": dropped_frac,
             "dropped_max_abs_h": dropped_max["KS"], "dropped_max_abs_s": dropped_max["S"]}
    return Record(name, structure, basis, edges.ei, edges.shift, onsite["KS"], offsite["KS"], onsite["S"],
                  offsite["S"], n_electrons=n_electrons, meta={**(meta or {}), **stats})


def fold_images(work: Path, project: str, log: str, n_orb: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense sum_R M_R of H and S in CP2K's orbital order: the Gamma-point matrices (for
    `compute()` of a per-image run, and the check against a Gamma-only run)."""
    from zoo.data.importers.cp2k import read_triplets

    out = []
    table = image_table(log, "KS")
    for m in MATRICES:
        total = np.zeros((n_orb, n_orb))
        for number, image in table.items():
            try:
                r, c, v = read_triplets(image_file(work, project, m, number), n_orb, index_base=1, mirror=False)
            except DataError as exc:
                raise EngineError(f"reading CP2K's image {image} matrix: {exc}") from None
            np.add.at(total, (r, c), v)
        out.append(total)
    return out[0], out[1]
