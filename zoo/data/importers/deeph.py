"""DeepH / DeepH-E3 processed directories (OpenMX, or ABACUS/SIESTA through DeepH's converters).

Files: `element.dat` (N atomic numbers), `site_positions.dat` (3 x N, columns are atoms, A),
`lat.dat` (3 x 3, columns are lattice vectors, A), `orbital_types.dat` (one line per atom: the
l of each shell), `info.json` ({"isspinful": bool, "fermi_level": eV}), `hamiltonians.h5` and
optional `overlaps.h5` with blocks keyed "[Rx, Ry, Rz, i, j]" (1-based atoms, R = image of j),
eV, OpenMX orbital order. Spinful blocks are complex (2n_i x 2n_j) as [[uu, ud], [du, dd]]; the
overlap stays spinless there and is expanded to diag(S, S). A root directory whose
sub-directories are DeepH directories imports them all.

`info.json` may carry a "zoo" entry (written by `zoo data export deeph`) naming the basis and
the image convention, so that an export imports back to the same dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from zoo.data.format import Record
from zoo.data.importers.common import (source_dirs, BlockConverter, ImportSource, check_elements, check_numbers,
                                       complete_directions, h5_array, h5_keys, h5_open, load_json, load_txt,
                                       make_record, make_structure, read_text, resolve_basis)
from zoo.errors import BasisError, DataError
from zoo.physics.basis import BasisSet

FORMAT = "deeph"
REQUIRED = ("element.dat", "site_positions.dat", "lat.dat", "orbital_types.dat", "hamiltonians.h5")


def _is_dir(p: Path) -> bool:
    return all((p / f).is_file() for f in REQUIRED)


def _elements(d: Path) -> np.ndarray:
    return check_numbers(load_txt(d / "element.dat", np.int64, "atomic numbers").reshape(-1), d / "element.dat")


def _info(d: Path) -> dict:
    p = d / "info.json"
    if not p.is_file():
        return {}
    obj = load_json(p)
    if not isinstance(obj, dict):
        raise DataError("expected a JSON object", p)
    zoo = obj.get("zoo", {})
    if not isinstance(zoo, dict):
        raise DataError(f"'zoo' must be an object, got {type(zoo).__name__}", p)
    if not isinstance(obj.get("isspinful", False), (bool, int)):
        raise DataError(f"'isspinful' must be true/false, got {obj['isspinful']!r}", p)
    n_e = zoo.get("n_electrons")
    if n_e is not None and (isinstance(n_e, bool) or not isinstance(n_e, (int, float)) or not np.isfinite(n_e)):
        raise DataError(f"'zoo.n_electrons' must be a number, got {n_e!r}", p)
    if not isinstance(zoo.get("image_convention", "explicit"), str) or not isinstance(zoo.get("name", ""), str):
        raise DataError("'zoo.image_convention' and 'zoo.name' must be strings", p)
    return obj


def _orbital_types(d: Path, numbers: np.ndarray) -> dict[int, tuple[int, ...]]:
    p = d / "orbital_types.dat"
    lines = [ln.split() for ln in read_text(p).splitlines() if ln.strip()]
    if len(lines) != numbers.size:
        raise DataError(f"{len(lines)} lines of orbital types for {numbers.size} atoms (mismatched atom count)", p)
    found: dict[int, tuple[int, ...]] = {}
    for a, (z, toks) in enumerate(zip(numbers, lines)):
        try:
            ls = tuple(int(t) for t in toks)
        except ValueError:
            raise DataError(f"line {a + 1}: orbital types must be integers l, got {toks}", p) from None
        if found.setdefault(int(z), ls) != ls:
            raise DataError(f"atoms of element Z={z} have different shells ({list(found[int(z)])} and {list(ls)})", p)
    return found


def _parse_key(key: str, path: Path) -> tuple[int, ...]:
    try:
        vals = json.loads(key)
        if not (isinstance(vals, list) and len(vals) == 5 and all(isinstance(v, int) for v in vals)):
            raise ValueError
    except (json.JSONDecodeError, ValueError):
        raise DataError(f"block key {key!r} is not '[Rx, Ry, Rz, i, j]'", path) from None
    return tuple(vals)


def _blocks(path: Path, n: int, index_base: int, spinful: bool) -> dict[tuple, np.ndarray]:
    with h5_open(path) as f:
        out = {}
        for k in h5_keys(f, path):
            x, y, z, i, j = _parse_key(k, path)
            i, j = i - index_base, j - index_base
            if not (0 <= i < n and 0 <= j < n):
                raise DataError(f"block {k} names an atom outside {index_base}..{n - 1 + index_base} "
                                f"(mismatched atom count)", path)
            b = h5_array(f, k, path, np.complex128 if spinful else np.float64)
            if b.ndim != 2:
                raise DataError(f"block {k} has shape {b.shape}, expected a matrix", path)
            out[(i, j, x, y, z)] = b
        return out


def _record(d: Path, basis: BasisSet, energy_unit: str, convention: str, index_base: int) -> Record:
    numbers = _elements(d)
    n = numbers.size
    pos = load_txt(d / "site_positions.dat", what="positions")
    if pos.size != 3 * n:
        raise DataError(f"{pos.size} values for {n} atoms x 3 (mismatched atom count)", d / "site_positions.dat")
    lat = load_txt(d / "lat.dat", what="lattice vectors")
    if lat.size != 9:
        raise DataError(f"expected a 3 x 3 lattice, got {lat.size} values", d / "lat.dat")
    info = _info(d)
    zoo = info.get("zoo", {})
    pbc = np.asarray(zoo.get("pbc", [True, True, True]))
    # the structure is judged as a whole; name the file its coordinates come from
    st = make_structure(numbers, pos.reshape(3, n).T, lat.reshape(3, 3).T, pbc, d / "site_positions.dat")
    check_elements(basis, numbers, d / "orbital_types.dat")
    spinful = bool(info.get("isspinful", False))
    conv = BlockConverter(basis, convention, energy_unit, d / "hamiltonians.h5", spinful=spinful)
    hb = _blocks(d / "hamiltonians.h5", n, index_base, spinful)
    sb = _blocks(d / "overlaps.h5", n, index_base, False) if (d / "overlaps.h5").is_file() else None
    dtype = np.complex128 if spinful else np.float64
    onsite = [hb.pop((i, i, 0, 0, 0), None) for i in range(n)]
    if any(b is None for b in onsite):
        raise DataError(f"no on-site block [0, 0, 0, i, i] for some atoms", d / "hamiltonians.h5")
    keys = list(hb)
    ei = np.array([k[:2] for k in keys], dtype=np.int64).reshape(-1, 2)
    sh = np.array([k[2:] for k in keys], dtype=np.int64).reshape(-1, 3)
    off = [np.asarray(hb[k], dtype=dtype) for k in keys]
    onsite = [np.asarray(b, dtype=dtype) for b in onsite]
    s_on = s_off = None
    if sb is not None:
        extra = set(sb) - set(keys) - {(i, i, 0, 0, 0) for i in range(n)}
        if extra:
            raise DataError(f"{len(extra)} overlap blocks have no Hamiltonian block (e.g. {sorted(extra)[0]})",
                            d / "overlaps.h5")
        spin = (lambda b: np.kron(np.eye(2), b)) if spinful else (lambda b: b)
        try:
            s_on = [spin(np.asarray(sb[(i, i, 0, 0, 0)], dtype=np.float64)) for i in range(n)]
        except KeyError:
            raise DataError("an on-site overlap block is missing", d / "overlaps.h5") from None
        s_off = [spin(np.asarray(sb[k], dtype=np.float64)) if k in sb else np.zeros(b.shape) for k, b in zip(keys, off)]
        if spinful:
            s_on = [b.astype(np.complex128) for b in s_on]
            s_off = [b.astype(np.complex128) for b in s_off]
    n_e = zoo.get("n_electrons")
    if s_off is not None:  # S follows H through the completion of directions
        ei, sh, off, s_off = complete_directions(ei, sh, off, s_off)
    else:
        ei, sh, off = complete_directions(ei, sh, off)
    return make_record(str(zoo.get("name", d.resolve().name)), st, conv, onsite, ei, sh, off, s_on, s_off,
                       n_electrons=None if n_e is None else float(n_e),
                       meta={"source_dir": str(d), "fermi_level_ev": info.get("fermi_level")})


def read(src: str | Path, basis: Any = None, energy_unit: str = "eV", convention: str = "openmx",
         index_base: int = 1, code: str = "OpenMX (via DeepH)") -> tuple[ImportSource, BasisSet, Callable[[], Iterator[Record]]]:
    src = Path(src)
    dirs = source_dirs(src, _is_dir, REQUIRED, "DeepH")
    found: dict[int, tuple[int, ...]] = {}
    image_conventions = set()
    for d in dirs:
        numbers = _elements(d)
        for z, ls in _orbital_types(d, numbers).items():
            if found.setdefault(z, ls) != ls:
                raise DataError(f"element Z={z} has shells {list(ls)} here but {list(found[z])} elsewhere",
                                d / "orbital_types.dat")
        zoo = _info(d).get("zoo", {})
        image_conventions.add(zoo.get("image_convention", "explicit"))
        if basis is None and "basis" in zoo:
            try:
                basis = BasisSet.from_json(zoo["basis"])
            except (BasisError, ValueError) as exc:
                raise DataError(f"'zoo.basis': {exc}", d / "info.json") from None
    if len(image_conventions) > 1:
        raise DataError(f"sub-directories disagree on the image convention {sorted(image_conventions)}", src)
    bset = resolve_basis(basis, found, dirs[0] / "orbital_types.dat", name="deeph")
    source = ImportSource(FORMAT, src, code, convention, energy_unit, index_base=index_base,
                          image_convention=image_conventions.pop(), level_of_theory={"source_format": FORMAT})

    def records() -> Iterator[Record]:
        for d in dirs:
            yield _record(d, bset, energy_unit, convention, index_base)

    return source, bset, records
