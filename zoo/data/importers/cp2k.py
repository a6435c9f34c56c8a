"""CP2K matrices as used by Xia et al. (`large_atomic_structures`): a structure file plus
`H.csr` / `S.csr` text triplets.

- `structure.xyz`: extended xyz (cell from `Lattice=`), or plain xyz whose comment line ends
  with the three edges of an orthorhombic box ("... 21.3 21.3 21.3", commas allowed), or pass
  `cell=`; Angstrom.
- `H.csr`, `S.csr`: lines `row col value`, 1-based global orbital indices, Hartree (CP2K's
  `&KS_CSR_WRITE` / `&S_CSR_WRITE`). One triangle or the full matrix may be stored; a stored
  triangle is mirrored. Orbitals per atom follow the basis (CP2K lists shells as in the basis
  file, m = -l..l), which the files do not name: pass `basis=` (e.g. "szv-molopt-sr").
- The matrix is CP2K's Gamma-point (minimum-image) matrix, so the dataset is "gamma-folded":
  one edge per atom pair with its minimum-image shift, both directions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from zoo.data import structure_io
from zoo.data.format import Record, Structure
from zoo.data.importers.common import (BlockConverter, ImportSource, check_elements, cutoff_mask,
                                       minimum_image_shifts, numeric_array, read_text, resolve_basis)
from zoo.errors import DataError
from zoo.physics.assembly import block_offsets
from zoo.physics.basis import BasisSet

FORMAT = "cp2k"
_NUM = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eEdD][-+]?\d+)?$")


def _comment_box(path: Path) -> np.ndarray | None:
    """Orthorhombic cell from the last three numbers of an xyz comment line (Xia et al. style)."""
    lines = read_text(path, "structure file").splitlines()
    comment = lines[1] if len(lines) > 1 else ""
    toks = [t.strip(",;") for t in comment.split()]
    if len(toks) >= 3 and all(_NUM.match(t) for t in toks[-3:]) and "Lattice" not in comment:
        return np.diag([float(t.replace("d", "e").replace("D", "e")) for t in toks[-3:]])
    return None


def read_structure(path: Path, cell: Any = None, pbc: Any = None) -> Structure:
    """The structure, checked like any user structure file (`zoo.data.structure_io`): declared atom
    counts must fit the file, elements known, coordinates finite, a periodic cell non-degenerate."""
    if not path.is_file():
        raise DataError("missing structure file", path)
    try:
        st = structure_io.read_structure(path, format="extxyz")
    except DataError as first:
        # a free comment line ASE's extxyz parser trips over: read it as plain xyz. A comment with
        # key=value pairs (Lattice=...) is extxyz, and plain xyz would silently drop its cell.
        lines = read_text(path, "structure file").splitlines()
        if len(lines) > 1 and "=" in lines[1]:
            raise
        try:
            st = structure_io.read_structure(path, format="xyz")
        except DataError:
            raise first from None
    changed = False  # a cell or pbc given here (or in the comment line) makes a new structure to check
    if cell is not None:
        c = numeric_array(cell, path, "cell= option")
        if c.size not in (3, 9):
            raise DataError(f"cell= needs 3 box edges or a 3 x 3 matrix, got {c.size} values", path)
        st.cell = np.diag(c.reshape(3)) if c.size == 3 else c.reshape(3, 3)
        st.pbc[:] = True
        changed = True
    elif not st.pbc.any() and abs(np.linalg.det(st.cell)) < 1e-8:
        box = _comment_box(path)
        if box is not None:
            st.cell, st.pbc[:] = box, True
            changed = True
    if pbc is not None:
        st.pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        changed = True
    return structure_io.check_structure(st, path) if changed else st


def read_triplets(path: Path, n_orb: int, index_base: int = 1,
                  mirror: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, value) 0-based; a stored triangle mirrored (`mirror=False` for CP2K's per-image
    files M_R, which are not symmetric one by one); every fault names the file."""
    if not path.is_file():
        raise DataError("missing matrix file", path)
    try:
        df = pd.read_csv(path, sep=r"\s+", header=None, comment="#", dtype=np.float64, engine="c")
    except pd.errors.EmptyDataError:
        raise DataError("empty matrix file", path) from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"not 'row col value' triplets ({exc})", path) from None
    if df.shape[1] != 3:
        raise DataError(f"expected 3 columns (row col value), found {df.shape[1]}", path)
    a = df.to_numpy()
    if np.isnan(a).any():
        bad = int(np.flatnonzero(np.isnan(a).any(axis=1))[0]) + 1
        raise DataError(f"line {bad} is incomplete (truncated file?)", path)
    if np.any(a[:, :2] != np.rint(a[:, :2])):
        raise DataError("row/col indices are not integers", path)
    r = a[:, 0].astype(np.int64) - index_base
    c = a[:, 1].astype(np.int64) - index_base
    v = a[:, 2]
    if r.min() < 0 or c.min() < 0:
        raise DataError(f"an index is below {index_base} (the file is not {index_base}-based)", path)
    if r.max() >= n_orb or c.max() >= n_orb:
        raise DataError(f"orbital index {max(r.max(), c.max()) + index_base} exceeds the {n_orb} orbitals of the "
                        f"structure in this basis (mismatched atom/orbital count or wrong basis)", path)
    key = r * n_orb + c
    if np.unique(key).size != key.size:
        raise DataError("an entry (row, col) appears twice", path)
    if mirror and not (np.any(r < c) and np.any(r > c)):  # one triangle stored: mirror it
        o = r != c
        r, c, v = np.concatenate([r, c[o]]), np.concatenate([c, r[o]]), np.concatenate([v, v[o]])
    return r, c, v


def triplets_to_record(name: str, st: Structure, basis: BasisSet, mats: dict[str, tuple], convention: str,
                       energy_unit: str, cutoff: float | None, source: ImportSource, path: Path) -> Record:
    """Gamma-folded Record from global-orbital triplets (0-based) of H (and S), code convention."""
    conv = BlockConverter(basis, convention, energy_unit, path)
    z = st.numbers
    norb = np.array([conv.n(a) for a in z], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(norb)])
    atom_of = np.repeat(np.arange(z.size), norb)
    n_max = int(norb.max())
    inv_tab = np.zeros((int(z.max()) + 1, n_max), dtype=np.int64)
    sgn_tab = np.zeros((int(z.max()) + 1, n_max))
    for el in np.unique(z):
        p, s = conv.perm(el)
        inv = np.argsort(p)  # code index -> internal index
        inv_tab[el, :p.size], sgn_tab[el, :p.size] = inv, s[inv]
    # the union of the atom pairs of H and S, minimum-image shifts, cutoff
    pairs = np.unique(np.concatenate([np.stack([atom_of[m[0]], atom_of[m[1]]], 1) for m in mats.values()]), axis=0)
    off_pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    shifts = minimum_image_shifts(st, off_pairs[:, 0], off_pairs[:, 1])
    keep = cutoff_mask(st, off_pairs, shifts, cutoff, True, source)
    ei, sh = off_pairs[keep], shifts[keep]
    pair_id = np.full(z.size * z.size, -1, dtype=np.int64)
    pair_id[ei[:, 0] * z.size + ei[:, 1]] = np.arange(len(ei))
    on_off = block_offsets(norb, norb)
    e_off = block_offsets(norb[ei[:, 0]], norb[ei[:, 1]])
    out = {}
    for label, (r, c, v) in mats.items():
        ai, aj = atom_of[r], atom_of[c]
        li = inv_tab[z[ai], r - first[ai]]
        lj = inv_tab[z[aj], c - first[aj]]
        val = v * sgn_tab[z[ai], r - first[ai]] * sgn_tab[z[aj], c - first[aj]] * (conv.factor if label == "H" else 1.0)
        on = np.zeros(int(on_off[-1]))
        m = ai == aj
        on[on_off[ai[m]] + li[m] * norb[ai[m]] + lj[m]] = val[m]
        pid = pair_id[ai[~m] * z.size + aj[~m]]
        k = pid >= 0
        off = np.zeros(int(e_off[-1]))
        off[e_off[pid[k]] + li[~m][k] * norb[aj[~m][k]] + lj[~m][k]] = val[~m][k]
        out[label] = (on, off)
    rec = Record(name, st, basis, ei, sh, *out["H"], meta={"source": str(path)})
    if "S" in out:
        rec.s_onsite, rec.s_offsite = out["S"]
    return rec


def read(src: str | Path, basis: Any = None, structure: str = "structure.xyz", hamiltonian: str = "H.csr",
         overlap: str | None = "S.csr", cell: Sequence | None = None, pbc: Any = None, energy_unit: str = "hartree",
         index_base: int = 1, cutoff: float | None = None, convention: str = "cp2k",
         code: str = "CP2K") -> tuple[ImportSource, BasisSet, Callable[[], Iterator[Record]]]:
    src = Path(src)
    if not src.is_dir():
        raise DataError("source is not a directory holding structure.xyz and H.csr", src)
    dirs = [src] if (src / hamiltonian).is_file() else sorted(p for p in src.iterdir() if (p / hamiltonian).is_file())
    if not dirs:
        raise DataError(f"no {hamiltonian} here or in a sub-directory", src)
    bset = resolve_basis(basis, None, src / hamiltonian)
    source = ImportSource(FORMAT, src, code, convention, energy_unit, index_base=index_base,
                          image_convention="gamma-folded", level_of_theory={"source_format": FORMAT})
    source.notes.append("CP2K Gamma-point (minimum-image) matrices: blocks are Gamma-folded")

    def records() -> Iterator[Record]:
        for d in dirs:
            st = read_structure(d / structure, cell, pbc)
            check_elements(bset, st.numbers, d / structure)
            n_orb = int(bset.norb_per_atom(st.numbers).sum())
            mats = {"H": read_triplets(d / hamiltonian, n_orb, index_base)}
            if overlap and (d / overlap).is_file():
                mats["S"] = read_triplets(d / overlap, n_orb, index_base)
            yield triplets_to_record(d.resolve().name, st, bset, mats, convention, energy_unit, cutoff, source,
                                     d / hamiltonian)

    return source, bset, records
