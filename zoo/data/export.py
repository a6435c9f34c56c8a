"""Export a zoo dataset (or predicted records) to the formats peers' tools read.

    export_dataset(Dataset.open("datasets/si64"), "deeph", "out/si64-deeph")

DeepH: one processed directory per structure (`<dest>/<structure name>/`) with element.dat,
site_positions.dat, lat.dat, rlat.dat, orbital_types.dat, info.json and hamiltonians.h5 /
overlaps.h5 keyed "[Rx, Ry, Rz, i, j]" (1-based), eV, OpenMX orbital order; spinful records as
complex [[uu, ud], [du, dd]] blocks with a spinless overlap. info.json carries a "zoo" entry
(name, basis, image convention, pbc, n_electrons) so `zoo data import deeph` restores the
dataset exactly. The destination is written in a staging directory and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from zoo.data.format import Dataset, Record
from zoo.errors import ConfigError, DataError
from zoo.physics import spectra
from zoo.physics.conventions import orbital_permutation
from zoo.physics.units import HARTREE_EV

EXPORT_FORMATS = ("deeph",)
_FERMI_MAX_ORBITALS = 4000  # dense diagonalisation for info.json's fermi_level only below this


def _from_internal(block: np.ndarray, pi: tuple, pj: tuple) -> np.ndarray:
    """Internal -> code convention: code[perm[a]] = sign[a] * internal[a]."""
    (p_i, s_i), (p_j, s_j) = pi, pj
    out = np.empty_like(block)
    out[np.ix_(p_i, p_j)] = s_i[:, None] * block * s_j[None, :]
    return out


def _fermi_ev(rec: Record) -> float:
    if rec.n_electrons is None or rec.spinful or int(rec.norb.sum()) > _FERMI_MAX_ORBITALS:
        return 0.0
    try:
        return float(spectra.fermi_level(rec.eigvalsh(), rec.n_electrons)) * HARTREE_EV
    except Exception:  # a broken S only costs the optional Fermi level here
        return 0.0


def write_deeph(rec: Record, d: Path, image_convention: str = "explicit", convention: str = "openmx") -> None:
    """One DeepH processed directory for `rec`."""
    d.mkdir(parents=True, exist_ok=True)
    z = rec.numbers
    basis = rec.basis
    perms = {}
    for el in np.unique(z):
        p, s = orbital_permutation(basis.element_shells(el), convention)
        if rec.spinful:
            n = p.size
            p, s = np.concatenate([p, p + n]), np.concatenate([s, s])
        perms[int(el)] = (p, s)
    np.savetxt(d / "element.dat", z, fmt="%d")
    np.savetxt(d / "site_positions.dat", rec.positions.T)
    np.savetxt(d / "lat.dat", rec.cell.T)
    vol = abs(np.linalg.det(rec.cell))
    rlat = 2 * np.pi * np.linalg.inv(rec.cell) if vol > 1e-8 else np.zeros((3, 3))
    np.savetxt(d / "rlat.dat", rlat)  # columns are reciprocal vectors (b_k . a_l = 2 pi delta)
    (d / "orbital_types.dat").write_text("".join(" ".join(str(l) for l in basis.element_shells(a)) + "\n" for a in z))
    info = {"isspinful": bool(rec.spinful), "fermi_level": _fermi_ev(rec),
            "zoo": {"name": rec.name, "basis": basis.to_json(), "image_convention": image_convention,
                    "pbc": [bool(x) for x in rec.pbc], "n_electrons": rec.n_electrons}}
    (d / "info.json").write_text(json.dumps(info, indent=1))

    def dump(path: Path, on: list, off: list, factor: float, spin_reduce: bool) -> None:
        with h5py.File(path, "w") as f:
            for i, b in enumerate(on):
                f[json.dumps([0, 0, 0, i + 1, i + 1])] = _store(b, perms[int(z[i])], perms[int(z[i])], factor, spin_reduce)
            for (i, j), s, b in zip(rec.edge_index, rec.edge_shift, off):
                key = json.dumps([int(s[0]), int(s[1]), int(s[2]), int(i) + 1, int(j) + 1])
                f[key] = _store(b, perms[int(z[i])], perms[int(z[j])], factor, spin_reduce)

    def _store(b, pi, pj, factor, spin_reduce):
        out = _from_internal(b, pi, pj) * factor
        if spin_reduce:  # DeepH keeps the overlap spinless
            out = out[: out.shape[0] // 2, : out.shape[1] // 2].real
        return out

    dump(d / "hamiltonians.h5", rec.onsite_blocks("H"), rec.edge_blocks("H"), HARTREE_EV, False)
    if rec.has_overlap:
        dump(d / "overlaps.h5", rec.onsite_blocks("S"), rec.edge_blocks("S"), 1.0, rec.spinful)


def export_records(records: Iterable[Record], format: str, dest: str | Path, image_convention: str = "explicit",
                   overwrite: bool = False) -> Path:
    """Write records (e.g. predictions) in `format` under `dest`, atomically."""
    if format.lower() not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format!r}; known: {', '.join(EXPORT_FORMATS)}")
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise DataError("destination exists (pass overwrite=True / --overwrite to replace it)", dest)
    staging = dest.parent / f".{dest.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for rec in records:
            write_deeph(rec, staging / rec.name, image_convention)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def export_dataset(ds: Dataset, format: str, dest: str | Path, overwrite: bool = False) -> Path:
    """Every structure of `ds` in `format` under `dest` (one sub-directory per structure)."""
    return export_records(ds.records(), format, dest, ds.card.image_convention, overwrite)
