"""gears_h snapshots (GPAW LCAO, or ABACUS through gears_h's own converter).

Per snapshot directory: `atoms.extxyz`, `orbital_ells.json` ({Z: [l of each shell]}),
`ijD.npz` (ij [E, 2] 0-based, D [E, 3] = r_j + image - r_i in A), `hblocks_on-diagonal.npz`
and `hblocks_off-diagonal.npz` (key "hblocks": object arrays of (n_i x n_j) blocks, eV), and
optionally `H_MM_S_MM.npz` (dense or scipy-sparse S_MM, from which S blocks are taken).
gears_h cuts its blocks out of GPAW's Gamma-point matrix, so the data are Gamma-folded: each
pair (i, j) carries the sum over images, stored once with its minimum-image shift.
The object arrays are unpickled with a loader that admits numbers and arrays only.
A root directory whose sub-directories are snapshots imports them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from zoo.data.format import Record, Structure
from zoo.data.importers.common import (source_dirs, BlockConverter, ImportSource, check_elements, complete_directions,
                                       cutoff_mask, load_json, load_npz_safely, make_record, numeric_array,
                                       resolve_basis)
from zoo.data.structure_io import read_structure
from zoo.errors import BasisError, DataError
from zoo.physics.basis import BasisSet, symbol_to_z

FORMAT = "gears"
REQUIRED = ("atoms.extxyz", "orbital_ells.json", "ijD.npz", "hblocks_on-diagonal.npz", "hblocks_off-diagonal.npz")


def _is_snapshot(p: Path) -> bool:
    return all((p / f).is_file() for f in REQUIRED)


def _ells(path: Path) -> dict[int, tuple[int, ...]]:
    try:
        obj = load_json(path, "orbital ells")
        return {symbol_to_z(int(k) if k.isascii() and k.isdigit() else k): tuple(int(l) for l in v)
                for k, v in obj.items()}
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise DataError(f"expected {{Z: [l, ...]}} ({type(exc).__name__}: {exc})", path) from None
    except BasisError as exc:  # unknown element symbol
        raise DataError(str(exc), path) from None


def _key(arrays: dict, key: str, path: Path):
    if key not in arrays:
        raise DataError(f"no array {key!r} (found {sorted(arrays)})", path)
    return arrays[key]


def _blocks(obj: Any, path: Path) -> list[np.ndarray]:
    if not isinstance(obj, (np.ndarray, list, tuple)) or np.ndim(obj) == 0:
        raise DataError(f"'hblocks' is a {type(obj).__name__}, expected a list of blocks", path)
    out = [numeric_array(b, path, f"block {k}") for k, b in enumerate(obj)]
    for k, b in enumerate(out):
        if b.ndim != 2:
            raise DataError(f"block {k} has shape {b.shape}, expected a matrix", path)
    return out


def _read_atoms(path: Path) -> Structure:
    return read_structure(path, format="extxyz")


def _overlap_blocks(path: Path, st: Structure, conv: BlockConverter, ei: np.ndarray):
    arrays = load_npz_safely(path)
    s = _key(arrays, "S_MM", path)
    if isinstance(s, np.ndarray) and s.dtype == object and s.shape == ():
        s = s.item()
    try:
        s = s.toarray() if hasattr(s, "toarray") else s
    except (ValueError, TypeError, AttributeError, IndexError) as exc:  # a sparse matrix with damaged arrays
        raise DataError(f"S_MM is a broken sparse matrix ({type(exc).__name__}: {exc})", path) from None
    s = numeric_array(s, path, "S_MM")
    norb = np.array([conv.n(z) for z in st.numbers])
    off = np.concatenate([[0], np.cumsum(norb)])
    if s.shape != (off[-1], off[-1]):
        raise DataError(f"S_MM has shape {s.shape}; the basis needs {off[-1]} orbitals (mismatched orbital count)", path)
    on = [s[off[a]:off[a + 1], off[a]:off[a + 1]] for a in range(st.n_atoms)]
    offd = [s[off[i]:off[i + 1], off[j]:off[j + 1]] for i, j in ei]
    return on, offd


def _snapshot(d: Path, basis: BasisSet, energy_unit: str, cutoff: float | None, source: ImportSource) -> Record:
    st = _read_atoms(d / "atoms.extxyz")
    check_elements(basis, st.numbers, d / "orbital_ells.json")
    conv = BlockConverter(basis, "gpaw", energy_unit, d / "hblocks_off-diagonal.npz")
    ijd = load_npz_safely(d / "ijD.npz")
    ij = numeric_array(_key(ijd, "ij", d / "ijD.npz"), d / "ijD.npz", "ij")
    if np.any(ij != np.rint(ij)) or ij.size % 2:
        raise DataError(f"'ij' must be integer pairs, got {ij.size} values of {ij.dtype}", d / "ijD.npz")
    ij = ij.astype(np.int64).reshape(-1, 2)
    dv = numeric_array(_key(ijd, "D", d / "ijD.npz"), d / "ijD.npz", "D")
    if dv.size % 3:
        raise DataError(f"'D' must be vectors [E, 3], got {dv.size} values", d / "ijD.npz")
    dv = dv.reshape(-1, 3)
    on = _blocks(_key(load_npz_safely(d / "hblocks_on-diagonal.npz"), "hblocks", d / "hblocks_on-diagonal.npz"),
                 d / "hblocks_on-diagonal.npz")
    off = _blocks(_key(load_npz_safely(d / "hblocks_off-diagonal.npz"), "hblocks", d / "hblocks_off-diagonal.npz"),
                  d / "hblocks_off-diagonal.npz")
    if len(ij) != len(dv) or len(ij) != len(off):
        raise DataError(f"{len(ij)} pairs, {len(dv)} vectors D and {len(off)} off-diagonal blocks disagree "
                        f"(truncated or mismatched files)", d / "ijD.npz")
    if len(on) != st.n_atoms:
        raise DataError(f"{len(on)} on-diagonal blocks for {st.n_atoms} atoms (mismatched atom count)",
                        d / "hblocks_on-diagonal.npz")
    if ij.size and (ij.min() < 0 or ij.max() >= st.n_atoms):
        raise DataError(f"pair indices outside 0..{st.n_atoms - 1} (mismatched atom count)", d / "ijD.npz")
    # image of j from D = r_j + shift @ cell - r_i
    base = st.positions[ij[:, 1]] - st.positions[ij[:, 0]]
    if st.pbc.any():
        frac = (dv - base) @ np.linalg.inv(st.cell)
        sh = np.rint(frac).astype(np.int64)
        sh[:, ~st.pbc] = 0
    else:
        sh = np.zeros((len(ij), 3), dtype=np.int64)
    resid = np.abs(base + sh @ st.cell - dv).max(initial=0.0)
    if resid > 1e-3:
        raise DataError(f"pair vectors D do not match atoms.extxyz (residual {resid:.3g} A): wrong structure file?",
                        d / "ijD.npz")
    # Gamma-folded: one block per pair; keep its shortest image if the list repeats a pair
    dist = np.linalg.norm(dv, axis=1)
    order = np.lexsort((dist, ij[:, 1], ij[:, 0]))
    _, first = np.unique(ij[order], axis=0, return_index=True)
    keep_idx = order[first]
    if keep_idx.size < len(ij):
        source.notes.append(f"{d.name}: {len(ij) - keep_idx.size} repeated pairs (further images of a "
                            f"Gamma-folded block) were dropped")
    ei, sh2 = ij[keep_idx], sh[keep_idx]
    blocks = [off[k] for k in keep_idx]
    ei, sh2, blocks = complete_directions(ei, sh2, blocks)
    keep = cutoff_mask(st, ei, sh2, cutoff, True, source)
    ei, sh2 = ei[keep], sh2[keep]
    blocks = [b for b, k in zip(blocks, keep) if k]
    s_on = s_off = None
    if (d / "H_MM_S_MM.npz").is_file():
        s_on, s_off = _overlap_blocks(d / "H_MM_S_MM.npz", st, conv, ei)
    return make_record(d.resolve().name, st, conv, on, ei, sh2, blocks, s_on, s_off, meta={"source_dir": str(d)})


def read(src: str | Path, basis: Any = None, energy_unit: str = "eV", cutoff: float | None = None,
         code: str = "GPAW (LCAO, via gears_h)") -> tuple[ImportSource, BasisSet, Callable[[], Iterator[Record]]]:
    src = Path(src)
    dirs = source_dirs(src, _is_snapshot, REQUIRED, "gears_h snapshot")
    found: dict[int, tuple[int, ...]] = {}
    for d in dirs:
        found.update(_ells(d / "orbital_ells.json"))
    bset = resolve_basis(basis, found, dirs[0] / "orbital_ells.json", name="gpaw-lcao")
    source = ImportSource(FORMAT, src, code, "gpaw", energy_unit, index_base=0, image_convention="gamma-folded",
                          level_of_theory={"source_format": FORMAT})

    def records() -> Iterator[Record]:
        for d in dirs:
            yield _snapshot(d, bset, energy_unit, cutoff, source)

    return source, bset, records
