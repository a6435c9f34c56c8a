"""Validation of a record on read and before write: each fault is a DataError naming the file."""

from __future__ import annotations

import numpy as np
from ase.neighborlist import neighbor_list

from zoo.data.format import Record, Structure
from zoo.data.graph import check_cell_for_cutoff, perpendicular_widths
from zoo.errors import BasisError, DataError

MAX_Z = 118  # heaviest element with a symbol
MIN_DISTANCE = 0.5  # Angstrom; closer atoms are "overlapping" (a broken structure, not physics)
MAX_COORD = 1e5  # Angstrom; larger coordinates are corrupt (and the neighbour search time grows with the extent)


def check_self_images(cell: np.ndarray, pbc: np.ndarray, path=None) -> None:
    """A periodic width below MIN_DISTANCE puts every atom on its own image (and would make the
    neighbour search enumerate millions of images)."""
    w = perpendicular_widths(cell)
    thin = [f"{'abc'[k]}: {w[k]:.3g} A" for k in range(3) if pbc[k] and w[k] < MIN_DISTANCE]
    if thin:
        raise DataError(f"every atom overlaps its own periodic image: cell width {', '.join(thin)} "
                        f"is below {MIN_DISTANCE} A", path)


def validate_structure(st: Structure, path=None) -> None:
    """Atoms-only checks shared by records and users' structure files: atoms present, real
    elements, finite and sane coordinates, a non-degenerate cell thick enough to hold an atom
    without meeting its own image, no overlapping atoms."""
    n = st.n_atoms
    if n == 0:
        raise DataError("structure has no atoms", path)
    bad_z = np.flatnonzero((st.numbers < 1) | (st.numbers > MAX_Z))
    if bad_z.size:
        raise DataError(f"{bad_z.size} atom(s) with no element: atomic number outside 1..{MAX_Z} "
                        f"(atom {bad_z[0]}: Z={int(st.numbers[bad_z[0]])})", path)
    if st.positions.shape != (n, 3):
        raise DataError(f"positions have shape {st.positions.shape}, expected ({n}, 3)", path)
    for name, arr in (("positions", st.positions), ("cell", st.cell)):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{name} contain NaN or inf", path)
        if np.abs(arr).max(initial=0.0) > MAX_COORD:
            raise DataError(f"{name} exceed {MAX_COORD:g} A (corrupt numbers?)", path)
    if st.pbc.any() and abs(np.linalg.det(st.cell)) < 1e-8:
        raise DataError("periodic structure with a degenerate cell (zero volume)", path)
    check_self_images(st.cell, st.pbc, path)
    i, j, d = neighbor_list("ijd", st.to_ase(), MIN_DISTANCE)
    if i.size:
        k = int(np.argmin(d))
        raise DataError(f"overlapping atoms: {i.size // 2} pair(s) closer than {MIN_DISTANCE} A "
                        f"(atoms {i[k]} and {j[k]} at {d[k]:.3f} A)", path)


def validate_record(rec: Record, path=None, cutoff: float | None = None, image_convention: str = "explicit") -> None:
    """Structure and block consistency. Raises DataError(fault, path) on the first fault."""
    n = rec.n_atoms
    validate_structure(rec.structure, path)
    try:
        norb = rec.norb
    except BasisError as exc:
        raise DataError(str(exc), path) from None
    ei, sh = rec.edge_index, rec.edge_shift
    if ei.shape[0] != sh.shape[0]:
        raise DataError(f"{ei.shape[0]} edges but {sh.shape[0]} image shifts", path)
    if ei.size and (ei.min() < 0 or ei.max() >= n):
        raise DataError(f"edge_index refers to atoms outside 0..{n - 1}", path)
    if np.any((ei[:, 0] == ei[:, 1]) & np.all(sh == 0, axis=1)):
        raise DataError("an edge (i, i, shift 0) duplicates an on-site block", path)
    if ei.size and np.any(sh[:, ~rec.pbc] != 0):
        raise DataError("an edge has an image shift along a non-periodic direction", path)
    if ei.size:
        key = np.concatenate([ei, sh], axis=1)
        if np.unique(key, axis=0).shape[0] != key.shape[0]:
            raise DataError("duplicate edges (same i, j and shift)", path)
    n_on = int((norb * norb).sum())
    n_off = int((norb[ei[:, 0]] * norb[ei[:, 1]]).sum())
    for label, on, off in (("H", rec.h_onsite, rec.h_offsite), ("S", rec.s_onsite, rec.s_offsite)):
        if on is None:
            if label == "H" or rec.s_offsite is not None:
                raise DataError(f"{label} blocks are missing", path)
            continue
        if any(a is not None and a.dtype.kind not in "biufc" for a in (on, off)):
            raise DataError(f"{label} blocks hold non-numeric values", path)
        if on.size != n_on:
            raise DataError(f"{label} on-site blocks hold {on.size} values; the basis {rec.basis.name!r} needs {n_on} "
                            f"(block shape does not match the basis)", path)
        if off is None or off.size != n_off:
            raise DataError(f"{label} edge blocks hold {0 if off is None else off.size} values; the basis "
                            f"{rec.basis.name!r} needs {n_off} (block shape does not match the basis)", path)
        bad_on, bad_off = int((~np.isfinite(on)).sum()), int((~np.isfinite(off)).sum())
        if bad_on or bad_off:
            raise DataError(f"{label} contains NaN/inf ({bad_on} on-site, {bad_off} edge values)", path)
        if rec.spinful != np.iscomplexobj(on) and rec.spinful:
            raise DataError(f"spinful record with real {label} blocks", path)
    if cutoff is not None and image_convention == "gamma-folded" and rec.pbc.any():
        check_cell_for_cutoff(rec.cell, rec.pbc, cutoff, path)
