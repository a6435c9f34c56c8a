"""Real-spherical-harmonic conventions of the codes zoo reads, mapped to the internal one.

Internal convention (ADR 0001): real spherical harmonics with z as the polar axis, ordered
m = -l..l, all with positive leading coefficient, i.e.

    l=1: (py, pz, px)
    l=2: (dxy, dyz, dz2, dxz, dx2-y2)
    l=3: (fy(3x2-y2), fxyz, fyz2, fz3, fxz2, fz(x2-y2), fx(x2-3y2))

This is exactly e3nn's basis when vectors are handed to e3nn in the order (y, z, x)
(see `zoo.physics.wigner`). Each code's convention is, per l, the list of these functions in
the code's order with a sign: internal[m(name_k)] = sign_k * code[k]. Blocks convert as
B_int = T_l1 B_code T_l2^T with T the signed permutation. Shell order is the basis's business,
not the convention's.

`verified` says how a row was checked: 'engine-rotation' rows are tested by rotating a molecule
through the installed code itself (tests/test_engines.py); others come from the
code's documentation / its peers' converters and are tested for self-consistency only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from zoo.errors import ConventionError

#: function name -> (l, m) in the internal (standard real SH) convention
FUNCTIONS: dict[str, tuple[int, int]] = {
    "s": (0, 0),
    "py": (1, -1), "pz": (1, 0), "px": (1, 1),
    "dxy": (2, -2), "dyz": (2, -1), "dz2": (2, 0), "dxz": (2, 1), "dx2-y2": (2, 2),
    "fy(3x2-y2)": (3, -3), "fxyz": (3, -2), "fyz2": (3, -1), "fz3": (3, 0),
    "fxz2": (3, 1), "fz(x2-y2)": (3, 2), "fx(x2-3y2)": (3, 3),
}

_M_ORDER = {  # m = -l..l for l <= 3
    0: ["s"],
    1: ["py", "pz", "px"],
    2: ["dxy", "dyz", "dz2", "dxz", "dx2-y2"],
    3: ["fy(3x2-y2)", "fxyz", "fyz2", "fz3", "fxz2", "fz(x2-y2)", "fx(x2-3y2)"],
}
_ORCA_L3 = ["fz3", "fxz2", "fyz2", "fz(x2-y2)", "fxyz", "fx(x2-3y2)", "fy(3x2-y2)"]


@dataclass(frozen=True)
class Convention:
    name: str
    order: Mapping[int, Sequence[str]]  # l -> function names in the code's order
    signs: Mapping[int, Sequence[int]]  # l -> sign of each code function relative to internal
    source: str
    verified: str

    def matrix(self, l: int) -> np.ndarray:
        """Signed permutation T_l with v_internal = T_l @ v_code."""
        return _matrix(self.name, l)


def _conv(name, order, signs=None, source="", verified="documentation"):
    order = {l: list(order.get(l, _M_ORDER[l])) for l in _M_ORDER}
    signs = {l: list((signs or {}).get(l, [1] * (2 * l + 1))) for l in _M_ORDER}
    return Convention(name, order, signs, source, verified)


CONVENTIONS: dict[str, Convention] = {c.name: c for c in [
    _conv("internal", {}, source="zoo (e3nn basis with vectors as (y, z, x))", verified="definition"),
    _conv("e3nn", {}, source="alias of internal", verified="definition"),
    _conv("deeptb", {}, source="DeePTB stores m = -l..l, standard signs, after its ABACUS conversion (its "
          "OrbAbacus2DeepTB permutes ABACUS (0, 1, -1, ...) to (-l..l) and flips odd |m|); checked on the Si64 "
          "ABACUS data: the s-p overlap of each bond is -c Y_1(r_ij) with corr -0.999 per component "
          "(tests/test_importers_realdata.py)", verified="real-data"),
    _conv("xtb", {}, source="tblite/xtb: m = -l..l", verified="engine-rotation"),
    _conv("cp2k", {}, source="CP2K real solid harmonics, m = -l..l; checked by rotating H2O and the m-HfO2 cell "
          "through CP2K 2023.1 itself (tests/test_engine_cp2k.py: H and S up to l = 2, S up to l = 3)",
          verified="engine-rotation"),
    _conv("gpaw", {}, source="GPAW/gears_h real spherical harmonics, m = -l..l; checked on the WSe2 gears_h "
          "data: Se-W bond blocks s-p, p-s and s-d follow Y_l(r_ij) component by component with one sign "
          "(|corr| >= 0.99, tests/test_importers_realdata.py)", verified="real-data"),
    _conv("pyscf", {1: ["px", "py", "pz"]}, source="PySCF: p as (x, y, z), l >= 2 m = -l..l", verified="engine-rotation"),
    _conv("orca", {1: ["pz", "px", "py"], 2: ["dz2", "dxz", "dyz", "dx2-y2", "dxy"], 3: _ORCA_L3},
          signs={3: [1, 1, 1, 1, 1, -1, -1]},
          source="ORCA (SchNOrb/MD17): m = 0, +1, -1, +2, -2, ...; f(+-3) sign-flipped", verified="documentation"),
    _conv("openmx", {1: ["px", "py", "pz"], 2: ["dz2", "dx2-y2", "dxy", "dxz", "dyz"], 3: _ORCA_L3},
          source="OpenMX / DeepH processed data", verified="documentation"),
    _conv("abacus", {1: ["pz", "px", "py"], 2: ["dz2", "dxz", "dyz", "dx2-y2", "dxy"], 3: _ORCA_L3},
          signs={1: [1, -1, -1], 2: [1, -1, -1, 1, 1], 3: [1, -1, -1, 1, 1, -1, -1]},
          source="ABACUS (as converted by DeepH's ABACUS interface): odd |m| sign-flipped", verified="documentation"),
]}


def get_convention(name: str) -> Convention:
    try:
        return CONVENTIONS[name.lower()]
    except KeyError:
        raise ConventionError(f"unknown orbital convention {name!r}; known: {', '.join(sorted(CONVENTIONS))}") from None


@lru_cache(maxsize=None)
def _matrix(name: str, l: int) -> np.ndarray:
    conv = get_convention(name)
    if l not in conv.order:
        raise ConventionError(f"convention {name!r} does not define l={l}")
    t = np.zeros((2 * l + 1, 2 * l + 1))
    for k, (fn, sg) in enumerate(zip(conv.order[l], conv.signs[l])):
        fl, m = FUNCTIONS[fn]
        assert fl == l, (name, l, fn)
        t[m + l, k] = sg
    return t


def atom_transform(shells: Sequence[int], convention: str) -> np.ndarray:
    """Block-diagonal T for one atom's orbitals (shells in basis order): v_int = T v_code."""
    mats = [_matrix(convention.lower(), l) for l in shells]
    n = sum(m.shape[0] for m in mats)
    out = np.zeros((n, n))
    o = 0
    for m in mats:
        out[o:o + m.shape[0], o:o + m.shape[0]] = m
        o += m.shape[0]
    return out


def block_to_internal(block: np.ndarray, shells_i: Sequence[int], shells_j: Sequence[int], convention: str) -> np.ndarray:
    """Convert one (n_i x n_j) block from `convention` to internal: T_i B T_j^T."""
    return atom_transform(shells_i, convention) @ block @ atom_transform(shells_j, convention).T


def block_from_internal(block: np.ndarray, shells_i: Sequence[int], shells_j: Sequence[int], convention: str) -> np.ndarray:
    """Inverse of `block_to_internal` (T is orthogonal)."""
    return atom_transform(shells_i, convention).T @ block @ atom_transform(shells_j, convention)


def orbital_permutation(shells: Sequence[int], convention: str) -> tuple[np.ndarray, np.ndarray]:
    """(perm, sign) with v_int[a] = sign[a] * v_code[perm[a]] for one atom; fast path for big matrices."""
    t = atom_transform(shells, convention)
    perm = np.argmax(np.abs(t), axis=1)
    sign = t[np.arange(t.shape[0]), perm]
    return perm, sign
