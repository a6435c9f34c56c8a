"""Units. Stored: Hartree and Angstrom. Reported: mE_h and meV (CODATA 2018 via ASE)."""

from ase import units as _u

HARTREE_EV: float = float(_u.Hartree)  # 27.211386... eV per Hartree
BOHR_ANG: float = float(_u.Bohr)  # 0.529177... Angstrom per Bohr
RYDBERG_EV: float = float(_u.Rydberg)
EV_HARTREE: float = 1.0 / HARTREE_EV
MEH_PER_HARTREE: float = 1000.0
MEV_PER_HARTREE: float = 1000.0 * HARTREE_EV

#: factors that take a quantity in the named unit to Hartree
ENERGY_TO_HARTREE = {"hartree": 1.0, "ha": 1.0, "ev": EV_HARTREE, "ry": RYDBERG_EV / HARTREE_EV}
#: factors that take a length in the named unit to Angstrom
LENGTH_TO_ANGSTROM = {"angstrom": 1.0, "ang": 1.0, "bohr": BOHR_ANG}


def energy_factor(unit: str) -> float:
    """Multiplier from `unit` (hartree, eV, Ry) to Hartree."""
    from zoo.errors import ZooError

    try:
        return ENERGY_TO_HARTREE[unit.lower()]
    except KeyError:
        raise ZooError(f"unknown energy unit {unit!r}; known: {sorted(ENERGY_TO_HARTREE)}") from None
