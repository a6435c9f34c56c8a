"""SchNOrb / MD17 ASE databases (`schnorb_hamiltonian_water.db` etc.).

Each row: numbers, positions (A), and `data["hamiltonian"]` / `data["overlap"]` as dense
(n_orb x n_orb) matrices in Hartree, ORCA order (def2-SVP; p: pz, px, py; d: dz2, dxz, dyz,
dx2-y2, dxy; shells listed by l then n). Molecules: every ordered atom pair is an edge (or
those within cutoff=), image shift 0.
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from zoo.data.format import Record, Structure
from zoo.data.importers.common import (BlockConverter, ImportSource, check_elements, length_factor, make_structure,
                                       numeric_array, resolve_basis)
from zoo.errors import DataError
from zoo.physics.basis import BasisSet

FORMAT = "schnorb"


def _dense_to_record(name: str, st: Structure, conv: BlockConverter, h: np.ndarray, s: np.ndarray | None,
                     cutoff: float | None, path: Path, row_id: int) -> Record:
    z = st.numbers
    perms = [conv.perm(a) for a in z]
    norb = np.array([p.size for p, _ in perms])
    first = np.concatenate([[0], np.cumsum(norb)])
    gperm = np.concatenate([p + first[a] for a, (p, _) in enumerate(perms)])
    gsign = np.concatenate([sg for _, sg in perms])
    n = int(first[-1])
    mats = {}
    for label, m in (("H", h), ("S", s)):
        if m is None:
            continue
        m = np.asarray(m, dtype=np.float64)
        if m.shape != (n, n):
            raise DataError(f"row {row_id}: {label} has shape {m.shape}; the basis {conv.basis.name!r} needs ({n}, {n}) "
                            f"for {len(z)} atoms (mismatched atom/orbital count or wrong basis)", path)
        mats[label] = gsign[:, None] * m[np.ix_(gperm, gperm)] * gsign[None, :] * (conv.factor if label == "H" else 1.0)
    i, j = np.nonzero(~np.eye(len(z), dtype=bool))
    if cutoff is not None:
        d = np.linalg.norm(st.positions[j] - st.positions[i], axis=1)
        i, j = i[d < cutoff], j[d < cutoff]
    ei = np.stack([i, j], 1).astype(np.int64)

    def flat(m, rows, cols):
        return np.concatenate([m[first[a]:first[a + 1], first[b]:first[b + 1]].reshape(-1) for a, b in zip(rows, cols)]) \
            if len(rows) else np.zeros(0)

    atoms = np.arange(len(z))
    rec = Record(name, st, conv.basis, ei, np.zeros((len(ei), 3), np.int64), flat(mats["H"], atoms, atoms),
                 flat(mats["H"], i, j), meta={"source_row": int(row_id)})
    if "S" in mats:
        rec.s_onsite, rec.s_offsite = flat(mats["S"], atoms, atoms), flat(mats["S"], i, j)
    return rec


# ASE's database layer decodes rows lazily (SQL, JSON text, packed arrays); on a damaged file it
# fails with whatever its decoding step meets: these, besides sqlite3's own errors
_DB_ERRORS = (sqlite3.Error, TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
              struct.error, zlib.error)


def _rows(src: Path, select: str | None, limit: int | None) -> Iterator[tuple]:
    """(id, numbers, positions, cell, pbc, data) of each row, read inside the guard against a damaged
    database; judging the values is left to the caller."""
    from ase.db import connect

    try:
        db = connect(str(src), type="db")
        rows = iter(db.select(select, limit=limit) if select else db.select(limit=limit))
    except _DB_ERRORS as exc:
        raise DataError(f"not a readable ASE database ({type(exc).__name__}: {exc}); truncated file?", src) from None
    while True:
        try:
            row = next(rows, None)
            if row is None:
                return
            item = (int(row.id), row.numbers, row.positions, row.cell, row.pbc, row.data)
        except (*_DB_ERRORS, MemoryError, RecursionError) as exc:
            raise DataError(f"not a readable ASE database ({type(exc).__name__}: {exc}); truncated file?",
                            src) from None
        yield item


def read(src: str | Path, basis: Any = "def2-svp", energy_unit: str = "hartree", length_unit: str = "angstrom",
         convention: str = "orca", cutoff: float | None = None, limit: int | None = None, select: str | None = None,
         hamiltonian_key: str = "hamiltonian", overlap_key: str | None = "overlap",
         code: str = "ORCA (SchNOrb / MD17)") -> tuple[ImportSource, BasisSet, Callable[[], Iterator[Record]]]:
    src = Path(src)
    if not src.is_file():
        raise DataError("no such ASE database file", src)
    bset = resolve_basis(basis, None, src)
    lf = length_factor(length_unit, src)
    source = ImportSource(FORMAT, src, code, convention, energy_unit, length_unit=length_unit, index_base=0,
                          image_convention="explicit", level_of_theory={"source_format": FORMAT})

    def records() -> Iterator[Record]:
        conv = BlockConverter(bset, convention, energy_unit, src)
        for row_id, numbers, positions, cell, pbc, data in _rows(src, select, limit):
            if not isinstance(data, dict) or hamiltonian_key not in data:
                keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
                raise DataError(f"row {row_id}: no data[{hamiltonian_key!r}] (keys: {keys})", src)
            if overlap_key and overlap_key not in data:
                raise DataError(f"row {row_id}: no data[{overlap_key!r}] (keys: {sorted(map(str, data))}); "
                                f"pass overlap_key=None to import H only", src)
            flags = numeric_array(pbc, src, f"row {row_id}: pbc")
            if flags.any():
                raise DataError(f"row {row_id}: periodic rows are not SchNOrb molecules", src)
            st = make_structure(numbers, numeric_array(positions, src, f"row {row_id}: positions") * lf,
                                numeric_array(cell, src, f"row {row_id}: cell") * lf, flags, src)
            check_elements(bset, st.numbers, src)
            h = numeric_array(data[hamiltonian_key], src, f"row {row_id}: data[{hamiltonian_key!r}]")
            s = numeric_array(data[overlap_key], src, f"row {row_id}: data[{overlap_key!r}]") if overlap_key else None
            yield _dense_to_record(f"{src.stem}_{row_id:06d}", st, conv, h, s, cutoff, src, row_id)

    return source, bset, records
