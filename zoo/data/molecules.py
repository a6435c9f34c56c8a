"""Starting geometries of the MD17-style molecules.

ASE's tables (`ase.build.molecule`) cover water and ethanol; uracil is one monomer of ASE's S22
hydrogen-bonded uracil dimer; malondialdehyde (the chelated enol, Cs) is typed in here from
textbook bond lengths. Every start is relaxed with GFN1-xTB (the force field of the MD that
follows), so the typed-in coordinates only need the right connectivity.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from zoo.errors import ZooError

# planar enol O=CH-CH=CH-OH with the O-H...O bridge (O...O 2.55 A), Angstrom
_MALONDIALDEHYDE = [
    ("C", (0.000, 1.200, 0.0)), ("C", (-1.220, 0.480, 0.0)), ("C", (1.230, 0.500, 0.0)),
    ("O", (-1.300, -0.760, 0.0)), ("O", (1.250, -0.840, 0.0)), ("H", (0.300, -1.150, 0.0)),
    ("H", (0.000, 2.280, 0.0)), ("H", (-2.160, 1.050, 0.0)), ("H", (2.180, 1.030, 0.0)),
]

#: catalogue name -> formula, for the checks below
FORMULAS = {"H2O": "H2O", "CH3CH2OH": "C2H6O", "uracil": "C4H4N2O2", "malondialdehyde": "C3H4O2"}


def molecule_geometry(name: str, relax: bool | None = None) -> Atoms:
    """A molecule by name (ASE's table, "uracil" or "malondialdehyde"). `relax` (default: only
    for the two that are not ASE's own molecules) relaxes it with GFN1-xTB and centres it."""
    if name == "malondialdehyde":
        atoms = Atoms([s for s, _ in _MALONDIALDEHYDE], positions=[p for _, p in _MALONDIALDEHYDE])
    elif name == "uracil":
        from ase.collections import s22

        atoms = s22["Uracil_dimer_h-bonded"][:12]  # the first monomer
    else:
        from ase.build import molecule

        try:
            atoms = molecule(name)
        except KeyError:
            raise ZooError(f"unknown molecule {name!r}: not in ASE's tables, nor uracil / malondialdehyde") from None
    want = FORMULAS.get(name)
    if want is not None and atoms.get_chemical_formula(mode="hill") != want:
        raise ZooError(f"molecule {name!r} came out as {atoms.get_chemical_formula(mode='hill')}, expected {want}")
    atoms = Atoms(atoms.numbers, positions=atoms.positions)  # drop cell / tags / info of the source table
    if relax is None:
        relax = name in ("uracil", "malondialdehyde")
    if relax:
        from ase.optimize import FIRE
        from tblite.ase import TBLite

        atoms.calc = TBLite(method="GFN1-xTB", verbosity=0)
        FIRE(atoms, logfile=None).run(fmax=0.01, steps=500)
        atoms.calc = None
        atoms.positions -= atoms.positions.mean(axis=0)
    return atoms


def bonded_pairs(atoms: Atoms, scale: float = 1.2) -> set[tuple[int, int]]:
    """Atom pairs closer than `scale` x the sum of covalent radii (the connectivity)."""
    from ase.data import covalent_radii

    r = covalent_radii[atoms.numbers]
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    i, j = np.nonzero(np.triu(d < scale * (r[:, None] + r[None]), k=1))
    return {(int(a), int(b)) for a, b in zip(i, j)}
