"""A user's structure file -> `Structure` (for `zoo predict` and the importers).

Any format ase.io reads (xyz, extxyz, cif, POSCAR/CONTCAR, ...). ASE's parsers raise whatever
their parsing code happens to hit (ValueError, IndexError, KeyError, StopIteration, struct and
Unicode errors, ...), so every failure is turned into one DataError naming the file and the fault,
and the result is checked before anyone builds a graph from it: at least one atom, known
elements, finite coordinates of sane size, a non-degenerate cell where periodic, no overlapping
atoms.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from zoo.data.format import Structure
from zoo.data.validate import validate_structure
from zoo.errors import DataError

MAX_PROPERTY_COLUMNS = 1000  # per extxyz property; real files have 1 to 9


def _declared_counts(path: Path, format: str | None) -> None:
    """Atom counts declared in xyz frame headers and POSCAR count lines must fit in the file: ASE
    trusts them and a corrupt count (10^12) makes it allocate or loop for ever."""
    from ase.io.formats import filetype

    try:
        fmt = format or filetype(str(path))
    except Exception:  # noqa: BLE001 -- unknown type: ase.io.read will say so itself
        return
    if fmt not in ("xyz", "extxyz", "vasp"):
        return
    lines = path.read_bytes().splitlines()
    if fmt == "vasp":
        for k in (5, 6):  # the counts line (VASP 4: line 6; VASP 5: line 7, after the symbols)
            try:
                counts = [float(t) for t in lines[k].split()] if k < len(lines) else []
            except ValueError:
                continue  # the symbols line
            if counts:
                total = sum(counts)
                if not np.isfinite(total) or total > len(lines):
                    raise DataError(f"POSCAR declares {total:g} atoms but has {len(lines)} lines "
                                    f"(truncated or corrupt)", path)
                return
        return
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if not head:
            i += 1
            continue
        if not head.isdigit():
            return  # not a count line: the parser reports it
        n = int(head)
        _check_properties(lines[i + 1] if i + 1 < len(lines) else b"", path)
        if n > len(lines) - i - 2:
            raise DataError(f"frame at line {i + 1} declares {n} atoms but only {max(0, len(lines) - i - 2)} lines "
                            f"follow (truncated or corrupt)", path)
        i += n + 2


def _check_properties(comment: bytes, path: Path) -> None:
    """extxyz 'Properties=name:type:ncols:...': ASE builds one dtype field per column, so a corrupt
    column count (10^18) never returns."""
    m = re.search(rb"properties=(\S+)", comment, flags=re.IGNORECASE)
    if not m:
        return
    fields = m.group(1).strip(b"\"'").split(b":")
    counts = fields[2::3]
    if any(c.isdigit() and int(c) > MAX_PROPERTY_COLUMNS for c in counts):
        raise DataError(f"extxyz Properties declare more than {MAX_PROPERTY_COLUMNS} columns "
                        f"({m.group(1)[:80].decode(errors='replace')})", path)


def _ase_read(path: Path, format: str | None, index: int | str | None):
    import ase.io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASE warns on odd but readable input; the checks below judge it
        return ase.io.read(str(path), index=":" if index is None else index, format=format)


def read_structure(path: str | Path, format: str | None = None, index: int | None = None) -> Structure:
    """Read one structure. A file holding several frames needs `index` (e.g. -1 for the last)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("structure file does not exist (or is not a file)", path)
    try:
        if path.stat().st_size == 0:
            raise DataError("structure file is empty", path)
        _declared_counts(path, format)
    except OSError as exc:  # permissions, a vanished file, I/O errors
        raise DataError(f"cannot read structure ({exc.strerror or exc})", path) from None
    try:
        frames = _ase_read(path, format, index)
    except (MemoryError, RecursionError):
        raise DataError("structure file is too large or too deeply nested to parse", path) from None
    except Exception as exc:  # noqa: BLE001 -- ASE's parsers raise arbitrary types on bad input
        kind = type(exc).__name__
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no detail"
        raise DataError(f"cannot read structure ({kind}: {msg})", path) from None
    if isinstance(frames, list):
        if not frames:
            raise DataError("structure file holds no structure", path)
        if len(frames) > 1:
            raise DataError(f"structure file holds {len(frames)} structures; choose one (index)", path)
        atoms = frames[0]
    else:
        atoms = frames
    return check_structure(atoms, path)


def check_structure(atoms, path: str | Path | None = None) -> Structure:
    """ase.Atoms (or Structure) -> validated Structure; faults are DataErrors naming `path`."""
    try:
        st = atoms if isinstance(atoms, Structure) else Structure.from_ase(atoms)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"not a structure ({type(exc).__name__}: {exc})", path) from None
    validate_structure(st, path)
    return st


