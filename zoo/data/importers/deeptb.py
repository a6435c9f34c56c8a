"""DeePTB directories (e.g. ABACUS data converted by DeePTB).

Files: `atomic_numbers.dat` (N), `positions.dat` (N x 3 per frame, A), `cell.dat` (3 x 3, rows
are lattice vectors; one per frame or one for all), `pbc.dat` (3 flags), `basis.dat`
({'Si': '1s1p'}: shells per element, listed by l), `hamiltonians.h5` / `overlaps.h5` with one
group per frame ("0", "1", ...) holding blocks keyed "i_j_Rx_Ry_Rz" (0-based atoms, R = image of
j), in eV. DeePTB stores m = -l..l with standard signs after its ABACUS conversion, i.e. the
internal convention (checked on the Si64 example: the s-p overlap of a bond is -c * Y_1(r_ij)).
A root directory whose sub-directories are DeePTB directories imports them all.
"""

from __future__ import annotations

import ast
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from zoo.data.format import Record, Structure
from zoo.data.importers.common import (MAX_SHELLS, BlockConverter, ImportSource, check_elements, check_numbers,
                                       h5_array, h5_group, h5_keys, h5_open, load_txt, make_record, make_structure,
                                       read_text, resolve_basis)
from zoo.errors import BasisError, DataError
from zoo.physics.basis import BasisSet, parse_shells, symbol_to_z

FORMAT = "deeptb"
REQUIRED = ("atomic_numbers.dat", "positions.dat", "cell.dat", "hamiltonians.h5")


def _is_dir(p: Path) -> bool:
    return all((p / f).is_file() for f in REQUIRED)


def _pbc(path: Path) -> np.ndarray:
    if not path.is_file():
        return np.ones(3, dtype=bool)
    toks = read_text(path, "pbc flags").replace(",", " ").split()
    try:
        vals = [t.lower() in ("true", "t") or (t.lower() not in ("false", "f") and float(t) != 0) for t in toks]
    except ValueError:
        raise DataError(f"pbc flags must be numbers or true/false, got {toks}", path) from None
    if len(vals) not in (1, 3):
        raise DataError(f"expected 1 or 3 pbc flags, got {len(vals)}", path)
    return np.broadcast_to(np.array(vals, dtype=bool), (3,)).copy()


def _basis_file(path: Path) -> dict[int, tuple[int, ...]] | None:
    if not path.is_file():
        return None
    try:
        obj = dict(ast.literal_eval(read_text(path, "basis description").strip()))
        for k, v in obj.items():  # '999999999s' would make parse_shells build a list that large
            if isinstance(v, str) and sum(int(n) for n in re.findall(r"\d+", v)) > MAX_SHELLS:
                raise DataError(f"{k}: shell string {v[:40]!r} lists more than {MAX_SHELLS} shells", path)
        return {symbol_to_z(k): parse_shells(v) for k, v in obj.items()}
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise DataError(f"cannot read the basis description ({type(exc).__name__}: {exc}); "
                        f"expected e.g. {{'Si': '1s1p'}}", path) from None
    except BasisError as exc:  # unknown symbols / shell strings
        raise DataError(f"bad basis description: {exc}", path) from None


def _parse_key(key: str, path: Path) -> tuple[int, int, int, int, int]:
    if not isinstance(key, str):  # h5py hands back undecodable link names as bytes
        raise DataError(f"block key {key!r} is not 'i_j_Rx_Ry_Rz'", path)
    parts = key.split("_")
    try:
        if len(parts) != 5:
            raise ValueError
        i, j, x, y, z = (int(p) for p in parts)
    except ValueError:
        raise DataError(f"block key {key!r} is not 'i_j_Rx_Ry_Rz'", path) from None
    return i, j, x, y, z


def _frame_order(key: str) -> int:
    """Frames "0", "1", ... in numeric order; other names first (ASCII digits only: int() of
    other Unicode digits fails)."""
    return int(key) if key.isascii() and key.isdigit() else -1


def _frame_blocks(f: h5py.File, frame: str, path: Path) -> dict[tuple, np.ndarray]:
    keys = h5_keys(f, path)
    if frame not in keys:
        raise DataError(f"no group {frame!r} (DeePTB keeps one group per frame; found {keys[:5]})", path)
    g = h5_group(f, frame, path)
    out = {}
    for k in h5_keys(g, path):
        key = _parse_key(k, path)
        b = h5_array(g, k, path)
        if b.ndim != 2:
            raise DataError(f"block {frame}/{k} has shape {b.shape}, expected a matrix", path)
        out[key] = b
    return out


def _records(d: Path, tag: str, basis: BasisSet, energy_unit: str) -> Iterator[Record]:
    numbers = check_numbers(load_txt(d / "atomic_numbers.dat", np.int64, "atomic numbers").reshape(-1),
                            d / "atomic_numbers.dat")
    n = numbers.size
    pos = load_txt(d / "positions.dat", what="positions")
    if pos.size % (3 * n):
        raise DataError(f"{pos.size} position values do not make frames of {n} atoms x 3 (mismatched atom count)",
                        d / "positions.dat")
    pos = pos.reshape(-1, n, 3)
    cell = load_txt(d / "cell.dat", what="cell vectors") if (d / "cell.dat").stat().st_size else np.zeros(9)
    if cell.size % 9:
        raise DataError(f"{cell.size} cell values do not make 3 x 3 cells (one per frame or one for all)",
                        d / "cell.dat")
    cell = cell.reshape(-1, 3, 3)
    if cell.shape[0] not in (1, pos.shape[0]):
        raise DataError(f"{cell.shape[0]} cells for {pos.shape[0]} frames of positions", d / "cell.dat")
    pbc = _pbc(d / "pbc.dat")
    check_elements(basis, numbers, d / "basis.dat")
    conv = BlockConverter(basis, "deeptb", energy_unit, d / "hamiltonians.h5")
    with ExitStack() as stack:
        hf = stack.enter_context(h5_open(d / "hamiltonians.h5"))
        sf = stack.enter_context(h5_open(d / "overlaps.h5")) if (d / "overlaps.h5").is_file() else None
        frames = sorted(h5_keys(hf, d / "hamiltonians.h5"), key=_frame_order)
        if len(frames) != pos.shape[0]:
            raise DataError(f"{len(frames)} frames of blocks but {pos.shape[0]} frames of positions "
                            f"(mismatched atom count?)", d / "hamiltonians.h5")
        for k, frame in enumerate(frames):
            c = cell[k] if cell.shape[0] > 1 else cell[0]
            st = make_structure(numbers, pos[k], c, pbc, d / "positions.dat")
            hb = _frame_blocks(hf, frame, d / "hamiltonians.h5")
            sb = _frame_blocks(sf, frame, d / "overlaps.h5") if sf is not None else None
            yield _one(f"{tag}{int(frame):04d}" if _frame_order(frame) >= 0 else f"{tag}{frame}", st, conv, hb, sb, d)


def _one(name: str, st: Structure, conv: BlockConverter, hb: dict, sb: dict | None, d: Path) -> Record:
    n = st.n_atoms
    onsite = [hb.pop((i, i, 0, 0, 0), None) for i in range(n)]
    missing = [i for i, b in enumerate(onsite) if b is None]
    if missing:
        raise DataError(f"no on-site block for atoms {missing[:5]} (keys 'i_i_0_0_0')", d / "hamiltonians.h5")
    keys = list(hb)
    if any(not (0 <= i < n and 0 <= j < n) for i, j, *_ in keys):
        raise DataError(f"a block key names an atom outside 0..{n - 1} (mismatched atom count)", d / "hamiltonians.h5")
    ei = np.array([(i, j) for i, j, *_ in keys], dtype=np.int64).reshape(-1, 2)
    sh = np.array([r for *_, r0, r1, r2 in keys for r in (r0, r1, r2)], dtype=np.int64).reshape(-1, 3)
    off = [hb[k] for k in keys]
    s_on = s_off = None
    if sb is not None:
        s_on = [sb.pop((i, i, 0, 0, 0), None) for i in range(n)]
        if any(b is None for b in s_on):
            raise DataError("an on-site overlap block is missing", d / "overlaps.h5")
        extra = set(sb) - set(keys)
        if extra:
            raise DataError(f"{len(extra)} overlap blocks have no Hamiltonian block (e.g. {sorted(extra)[0]})",
                            d / "overlaps.h5")
        # S decays faster than H: blocks DeePTB dropped below its threshold are zero
        off_s = []
        for k, b in zip(keys, off):
            off_s.append(sb.get(k, np.zeros_like(b)))
        s_off = off_s
    return make_record(name, st, conv, onsite, ei, sh, off, s_on, s_off, meta={"source_dir": str(d)})


def read(src: str | Path, basis: Any = None, energy_unit: str = "eV") -> tuple[ImportSource, BasisSet, Callable[[], Iterator[Record]]]:
    src = Path(src)
    if not src.exists():
        raise DataError("source does not exist", src)
    dirs = [src] if _is_dir(src) else sorted(p for p in src.iterdir() if p.is_dir() and _is_dir(p)) if src.is_dir() else []
    if not dirs:
        missing = [f for f in REQUIRED if not (src / f).is_file()]
        raise DataError(f"not a DeePTB directory (missing {missing}) and no sub-directory is one", src)
    found: dict[int, tuple[int, ...]] = {}
    for d in dirs:
        found.update(_basis_file(d / "basis.dat") or {})
    bset = resolve_basis(basis, found or None, dirs[0] / "basis.dat", name="deeptb")
    source = ImportSource(FORMAT, src, "ABACUS (via DeePTB)", "deeptb", energy_unit, index_base=0,
                          image_convention="explicit", level_of_theory={"source_format": FORMAT})

    def records() -> Iterator[Record]:
        for d in dirs:
            yield from _records(d, f"{d.resolve().name}_", bset, energy_unit)

    return source, bset, records
