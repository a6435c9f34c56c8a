"""Structures without labels, at any size: for `zoo predict`, benchmarks and examples.

    catalogue_structure("a-hfo2", "paper")          # the 3,000-atom melt-quenched test cell, no H computed
    repeat_structure(structure, (2, 2, 2))          # an N x M x K supercell of any structure
    write_structure(structure, "big.extxyz")        # atomically, any format ase.io.write knows

`catalogue_structure` runs the catalogue entry's own structure recipe (zoo.data.catalogue plans:
the same melt-quench, seed and size parameters as `zoo data build`), for one split's cell, and
skips the electronic-structure step: the structure of `zoo data build a-hfo2 --size paper`'s test
cell in minutes instead of a cluster-sized tblite run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.data.format import Structure, atomic_write
from zoo.errors import DataError, ZooError


def catalogue_structure(name: str, size: str | None = None, split: str = "test", index: int = 0) -> Structure:
    """The `index`-th structure of `split` in catalogue entry `name` at `size`, without labels."""
    from zoo.data.catalogue import parse_name

    entry, size = parse_name(name, size)
    plan = [(n, make) for n, sp, make in entry.plan(entry, size, entry.seed) if sp == split]
    if not plan:
        raise ZooError(f"catalogue entry {entry.name!r} has no {split!r} structures")
    if not 0 <= index < len(plan):
        raise ZooError(f"catalogue entry {entry.name!r} ({size}) has {len(plan)} {split!r} structures; "
                       f"index {index} is out of range")
    return plan[index][1]()


def parse_repeat(text: str) -> tuple[int, int, int]:
    """'2,2,1' (or '2x2x1', or '3' for 3,3,3) -> (2, 2, 1); ZooError otherwise."""
    parts = [p.strip() for p in text.lower().replace("x", ",").split(",")]
    try:
        reps = [int(p) for p in parts]  # an empty part ('2,,1', '2,x') is an error too
    except ValueError:
        raise ZooError(f"--repeat expects three positive integers such as 2,2,1, got {text!r}") from None
    if len(reps) == 1:
        reps *= 3
    if len(reps) != 3 or min(reps) < 1:
        raise ZooError(f"--repeat expects three positive integers such as 2,2,1, got {text!r}")
    return tuple(reps)


def repeat_structure(st: Structure, reps: Sequence[int], path: str | Path | None = None) -> Structure:
    """Supercell reps[0] x reps[1] x reps[2] (ase.Atoms.repeat); only periodic directions repeat."""
    reps = tuple(int(r) for r in reps)
    bad = [("abc"[k], r) for k, r in enumerate(reps) if r > 1 and not st.pbc[k]]
    if bad:
        raise DataError(f"cannot repeat along non-periodic direction(s) {', '.join(a for a, _ in bad)}", path)
    return Structure.from_ase(st.to_ase().repeat(reps))


def write_structure(st: Structure, path: str | Path, format: str | None = None) -> Path:
    """Write atomically (temp file + rename); extended XYZ unless the suffix or `format` says otherwise."""
    import ase.io

    path = Path(path)
    fmt = format or ("extxyz" if path.suffix.lower() in (".xyz", ".extxyz", "") else None)

    def _write(tmp: Path) -> None:
        ase.io.write(str(tmp), st.to_ase(), format=fmt or _format_of(path))

    atomic_write(path, _write, suffix=path.suffix)
    return path


def _format_of(path: Path) -> str:
    from ase.io.formats import ioformats

    suffix = path.suffix.lower().lstrip(".")
    for name, f in ioformats.items():
        if suffix in f.extensions and f.can_write:
            return name
    raise ZooError(f"{path}: no structure format writes '.{suffix}' files; use .extxyz, .cif, .vasp, ...")


def describe(st: Structure) -> str:
    """'3000 atoms (Hf1000 O2000), cell 52.4 x 26.2 x 26.2 A, 9.70 g/cm^3' (periodic widths)."""
    from zoo.data.graph import perpendicular_widths
    from zoo.data.structures import density_g_cm3

    atoms = st.to_ase()
    w = perpendicular_widths(st.cell)
    dens = f", {density_g_cm3(atoms):.2f} g/cm^3" if np.all(st.pbc) and w.min() > 0 else ""
    return f"{st.n_atoms} atoms ({atoms.get_chemical_formula()}), cell {' x '.join(f'{x:.1f}' for x in w)} A{dens}"
