"""Orbital bases and the padded orbital layout: the one authority on orbital indices.

A basis gives, per element, an ordered list of shells (their angular momenta l); every shell
holds 2l+1 real orbitals in the internal m order (-l..l, see `conventions`).

The *padded layout* of a set of elements is the union of their shells sorted by l, each l
repeated as often as the element that has most shells of that l ("slots"). An element's
shells occupy the slots of their l in the order they appear in the basis. Because every slot
has one fixed l for all atoms, a padded (n_max x n_max) block transforms as
D_layout(R) B D_layout(R)^T for every atom pair, which is what equivariant heads need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from zoo.errors import BasisError

L_LETTERS = "spdfgh"


def symbol_to_z(sym: str | int) -> int:
    if isinstance(sym, (int, np.integer)):
        return int(sym)
    try:
        return atomic_numbers[sym]
    except KeyError:
        raise BasisError(f"unknown element symbol {sym!r}") from None


def parse_shells(spec: str | Sequence[int]) -> tuple[int, ...]:
    """Shell list from a DeePTB-style string ('2s2p1d' -> (0, 0, 1, 1, 2)) or a list of l."""
    if not isinstance(spec, str):
        return tuple(int(l) for l in spec)
    parts = re.findall(r"(\d*)([spdfgh])", spec)
    if not parts or "".join(n + c for n, c in parts) != spec.replace(" ", ""):
        raise BasisError(f"cannot parse shell string {spec!r} (expected e.g. '2s2p1d')")
    out: list[int] = []
    for n, c in parts:
        out += [L_LETTERS.index(c)] * (int(n) if n else 1)
    return tuple(out)


# Named basis sets: element -> ordered shell l's (order as the reference code lists them).
_NAMED: dict[str, dict[str, tuple[int, ...]]] = {
    # CP2K MOLOPT, as in the seed datasets (Xia et al.): SZV-MOLOPT-SR-GTH
    "szv-molopt-sr": {
        "H": (0,), "O": (0, 1), "Ge": (0, 1), "Sb": (0, 1), "Te": (0, 1), "Si": (0, 1),
        "Hf": (0, 0, 1, 2), "Pt": (0, 0, 1, 2),
    },
    # CP2K DZVP-MOLOPT-SR-GTH (a-GST in the seed: 13 functions per atom)
    "dzvp-molopt-sr": {
        "Ge": (0, 0, 1, 1, 2), "Sb": (0, 0, 1, 1, 2), "Te": (0, 0, 1, 1, 2),
        "H": (0, 0, 1), "O": (0, 0, 1, 1, 2), "Si": (0, 0, 1, 1, 2),
        "Hf": (0, 0, 0, 1, 1, 2, 2, 3), "Pt": (0, 0, 0, 1, 1, 2, 2, 3),  # as BASIS_MOLOPT (CP2K 2023.1) lists them
    },
    # def2-SVP as used by MD17/SchNOrb (ORCA) and PySCF: shells listed by l, then n
    "def2-svp": {
        "H": (0, 0, 1), "C": (0, 0, 0, 1, 1, 2), "N": (0, 0, 0, 1, 1, 2), "O": (0, 0, 0, 1, 1, 2),
    },
    # GFN1-xTB valence basis as tblite 0.8 lays it out (Hf/Pt/W: d shell first)
    "gfn1-xtb": {
        "H": (0, 0), "C": (0, 1), "N": (0, 1), "O": (0, 1), "Si": (0, 1, 2), "Ge": (0, 1, 2),
        "Sb": (0, 1, 2), "Te": (0, 1, 2), "Se": (0, 1, 2), "Hf": (2, 0, 1), "Pt": (2, 0, 1),
        "W": (2, 0, 1),
    },
}


@dataclass(frozen=True)
class BasisSet:
    """Per-element ordered shells. `name` is informative; `shells` is the authority."""

    name: str
    shells: Mapping[int, tuple[int, ...]] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shells", {int(z): tuple(int(l) for l in ls) for z, ls in self.shells.items()})
        for z, ls in self.shells.items():
            if not ls or any(l < 0 or l > 5 for l in ls):
                raise BasisError(f"basis {self.name!r}: bad shell list {ls} for Z={z}")

    def element_shells(self, z: int) -> tuple[int, ...]:
        try:
            return self.shells[int(z)]
        except KeyError:
            sym = chemical_symbols[int(z)] if 0 <= int(z) < len(chemical_symbols) else str(z)
            known = ", ".join(chemical_symbols[k] for k in sorted(self.shells))
            raise BasisError(f"element {sym} (Z={z}) is not in basis {self.name!r} (it has: {known})") from None

    def n_orbitals(self, z: int) -> int:
        return sum(2 * l + 1 for l in self.element_shells(z))

    def norb_per_atom(self, numbers: Iterable[int]) -> np.ndarray:
        table = {z: self.n_orbitals(z) for z in set(int(z) for z in numbers)}
        return np.array([table[int(z)] for z in numbers], dtype=np.int64)

    def subset(self, elements: Iterable[int]) -> "BasisSet":
        return BasisSet(self.name, {int(z): self.element_shells(z) for z in elements})

    def to_json(self) -> dict:
        return {"name": self.name, "shells": {chemical_symbols[z]: list(ls) for z, ls in sorted(self.shells.items())}}

    @classmethod
    def from_json(cls, obj: Mapping) -> "BasisSet":
        try:
            return cls(str(obj["name"]), {symbol_to_z(s): parse_shells(ls) for s, ls in obj["shells"].items()})
        except (KeyError, TypeError, AttributeError) as exc:
            raise BasisError(f"malformed basis description {obj!r}: {exc}") from None


def list_basis_sets() -> list[str]:
    return sorted(_NAMED)


def get_basis(name: str) -> BasisSet:
    """A named basis from the table (case-insensitive)."""
    key = name.lower()
    if key not in _NAMED:
        raise BasisError(f"unknown basis set {name!r}; known: {', '.join(list_basis_sets())}")
    return BasisSet(key, {symbol_to_z(s): ls for s, ls in _NAMED[key].items()})


class OrbitalLayout:
    """Padded slot layout for a basis restricted to `elements`.

    Attributes: `slot_ls` (l of each slot, sorted by l), `slot_offsets`, `n_max`,
    `index[z]` (padded position of each of element z's orbitals, in basis order),
    `mask[z]` (bool n_max).
    """

    def __init__(self, basis: BasisSet, elements: Iterable[int]):
        self.basis = basis
        self.elements = tuple(sorted(set(int(z) for z in elements)))
        if not self.elements:
            raise BasisError("an orbital layout needs at least one element")
        mult: dict[int, int] = {}
        for z in self.elements:
            ls = basis.element_shells(z)
            for l in set(ls):
                mult[l] = max(mult.get(l, 0), ls.count(l))
        self.slot_ls: tuple[int, ...] = tuple(l for l in sorted(mult) for _ in range(mult[l]))
        dims = [2 * l + 1 for l in self.slot_ls]
        self.slot_offsets: tuple[int, ...] = tuple(int(x) for x in np.concatenate([[0], np.cumsum(dims)[:-1]]))
        self.n_max: int = int(sum(dims))
        self.index: dict[int, np.ndarray] = {}
        self.slots_of: dict[int, tuple[int, ...]] = {}
        for z in self.elements:
            seen: dict[int, int] = {}
            idx: list[int] = []
            slots: list[int] = []
            for l in basis.element_shells(z):
                k = seen.get(l, 0)
                seen[l] = k + 1
                slot = [s for s, sl in enumerate(self.slot_ls) if sl == l][k]
                slots.append(slot)
                idx += range(self.slot_offsets[slot], self.slot_offsets[slot] + 2 * l + 1)
            self.index[z] = np.array(idx, dtype=np.int64)
            self.slots_of[z] = tuple(slots)
        self.mask: dict[int, np.ndarray] = {}
        for z in self.elements:
            m = np.zeros(self.n_max, dtype=bool)
            m[self.index[z]] = True
            self.mask[z] = m

    def __repr__(self) -> str:
        return f"OrbitalLayout(basis={self.basis.name!r}, slots={''.join(L_LETTERS[l] for l in self.slot_ls)}, n_max={self.n_max})"

    def check_element(self, z: int) -> None:
        if int(z) not in self.index:
            raise BasisError(f"element Z={z} is not in this layout (elements {self.elements})")

    def mask_table(self, max_z: int | None = None) -> np.ndarray:
        """bool [max_z+1, n_max]: orbital mask indexed by atomic number (rows of absent elements False)."""
        top = max(self.elements) if max_z is None else max_z
        t = np.zeros((top + 1, self.n_max), dtype=bool)
        for z in self.elements:
            t[z] = self.mask[z]
        return t

    def slot_l_of_orbital(self) -> np.ndarray:
        """int [n_max]: l of each padded orbital."""
        return np.concatenate([[l] * (2 * l + 1) for l in self.slot_ls]).astype(np.int64)

    def to_json(self) -> dict:
        return {"basis": self.basis.to_json(), "elements": list(self.elements)}

    @classmethod
    def from_json(cls, obj: Mapping) -> "OrbitalLayout":
        return cls(BasisSet.from_json(obj["basis"]), obj["elements"])
