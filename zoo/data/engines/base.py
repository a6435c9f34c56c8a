"""The engine interface and the conversion of dense code-order matrices into zoo blocks.

An engine returns dense H and S over all orbitals of the structure, in its code's orbital
order and sign convention (atoms in order, each atom's shells in basis order). For a periodic
cell the matrices are Gamma-folded, H(Gamma) = sum_R H(R): `dense_to_record` then assigns each
atom pair's block to its single minimum image, which is unambiguous only when every periodic
width is at least 2 x cutoff (checked). Image convention of the result: "gamma-folded".
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from zoo.data.format import Record, Structure
from zoo.data.graph import check_cell_for_cutoff, neighbor_graph
from zoo.errors import ZooError
from zoo.physics.assembly import _coo_indices
from zoo.physics.basis import BasisSet, get_basis
from zoo.physics.conventions import orbital_permutation

# name -> "module:Class"; modules are imported on demand so a missing code costs nothing
_ENGINES = {
    "tblite": "zoo.data.engines.tblite:TBLiteEngine",
    "pyscf": "zoo.data.engines.pyscf_engine:PySCFEngine",
}


class EngineError(ZooError):
    """An engine is missing, or its calculation failed (e.g. SCC not converged)."""


@dataclass
class EngineOutput:
    """Dense matrices in the code's orbital order (Hartree) and what the run measured."""

    h: np.ndarray
    s: np.ndarray
    n_electrons: float
    meta: dict = field(default_factory=dict)


class Engine(ABC):
    """One electronic-structure code. Subclasses set `name`, `convention`, `basis_name`."""

    name: str = ""
    convention: str = "internal"
    basis_name: str = ""

    @classmethod
    @abstractmethod
    def available(cls) -> bool:
        """True when the code can run here (package importable / binary on PATH)."""

    @abstractmethod
    def level_of_theory(self) -> dict:
        """Card entry: code, version, method, basis and every setting that changes H."""

    @abstractmethod
    def compute(self, structure: Structure) -> EngineOutput:
        """Dense H and S (code convention, Hartree) for one structure; EngineError on failure."""

    def basis(self) -> BasisSet:
        return get_basis(self.basis_name)

    def record(self, structure: Structure, cutoff: float, name: str) -> Record:
        t0 = time.perf_counter()
        out = self.compute(structure)
        meta = {"engine": self.name, "wall_s": round(time.perf_counter() - t0, 3), **out.meta}
        return dense_to_record(structure, out.h, out.s, self.basis(), self.convention, cutoff, name,
                               n_electrons=out.n_electrons, meta=meta)


def list_engines() -> list[str]:
    return sorted(_ENGINES)


def get_engine(name: str, **options) -> Engine:
    """Instantiate an engine by name; EngineError if unknown or not installed here."""
    key = name.lower()
    if key not in _ENGINES:
        raise EngineError(f"unknown engine {name!r}; known: {', '.join(list_engines())}")
    mod, cls_name = _ENGINES[key].split(":")
    try:
        cls = getattr(importlib.import_module(mod), cls_name)
    except ImportError as exc:
        raise EngineError(f"engine {name!r} cannot be imported ({exc})") from None
    if not cls.available():
        raise EngineError(f"engine {name!r} is not installed on this machine")
    return cls(**options)


def orbital_reorder(numbers: np.ndarray, basis: BasisSet, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """(perm, sign) over all orbitals: M_int = (sign sign^T) * M_code[perm][:, perm]."""
    perms, signs = [], []
    offset = 0
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for z in np.asarray(numbers).tolist():
        if z not in cache:
            cache[z] = orbital_permutation(basis.element_shells(z), convention)
        p, s = cache[z]
        perms.append(p + offset)
        signs.append(s)
        offset += p.size
    return np.concatenate(perms), np.concatenate(signs)


def to_internal(m: np.ndarray, perm: np.ndarray, sign: np.ndarray) -> np.ndarray:
    return m[np.ix_(perm, perm)] * np.outer(sign, sign)


def _gather(m: np.ndarray, off: np.ndarray, norb: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Flat row-major blocks m[atom rows[k], atom cols[k]] for all k, concatenated."""
    if rows.size == 0:
        return np.zeros(0, dtype=m.dtype)
    out = []
    for a in range(0, rows.size, 200_000):  # bounded index memory for 3,000-atom cells
        r, c = _coo_indices(off[rows[a:a + 200_000]], off[cols[a:a + 200_000]], norb[rows[a:a + 200_000]],
                            norb[cols[a:a + 200_000]])
        out.append(m[r, c])
    return np.concatenate(out)


def dense_to_record(structure: Structure, h: np.ndarray, s: np.ndarray | None, basis: BasisSet, convention: str,
                    cutoff: float, name: str, n_electrons: float | None = None, meta: dict | None = None) -> Record:
    """Dense code-order H (and S) -> Record with on-site blocks and edge blocks within `cutoff`.

    Periodic structures must be at least 2 x cutoff wide along every periodic direction, so that
    each atom pair has at most one image inside the cutoff (the block of the folded matrix is
    stored at that image).
    """
    numbers = structure.numbers
    norb = basis.norb_per_atom(numbers)
    n = int(norb.sum())
    for label, m in (("H", h), ("S", s)):
        if m is not None and m.shape != (n, n):
            raise EngineError(f"{label} has shape {m.shape}; basis {basis.name!r} needs ({n}, {n}) for this structure")
    if structure.pbc.any():
        check_cell_for_cutoff(structure.cell, structure.pbc, cutoff)
    perm, sign = orbital_reorder(numbers, basis, convention)
    h_int = to_internal(np.asarray(h), perm, sign)
    s_int = None if s is None else to_internal(np.asarray(s), perm, sign)
    ei, sh = neighbor_graph(numbers, structure.positions, structure.cell, structure.pbc, cutoff)
    off = np.concatenate([[0], np.cumsum(norb)])
    atoms = np.arange(len(numbers))
    rec = Record(name, structure, basis, ei, sh,
                 _gather(h_int, off, norb, atoms, atoms), _gather(h_int, off, norb, ei[:, 0], ei[:, 1]),
                 None if s_int is None else _gather(s_int, off, norb, atoms, atoms),
                 None if s_int is None else _gather(s_int, off, norb, ei[:, 0], ei[:, 1]),
                 n_electrons=n_electrons, meta=dict(meta or {}))
    rec.meta.update(truncation_stats(h_int, s_int, [rec.h_onsite, rec.h_offsite], off, norb, ei))
    return rec


def truncation_stats(h: np.ndarray, s: np.ndarray | None, kept_h: list[np.ndarray], off: np.ndarray,
                     norb: np.ndarray, ei: np.ndarray) -> dict:
    """What the cutoff drops from the folded matrix: the fraction of ||H||_F outside the kept
    blocks and (for matrices up to 8,000 orbitals) the largest dropped |H| and |S| element."""
    kept2 = sum(float(np.dot(k, k)) for k in kept_h)
    total2 = float(np.vdot(h, h))
    out = {"dropped_frac_frobenius_h": float(np.sqrt(max(total2 - kept2, 0.0) / max(total2, 1e-300)))}
    if h.shape[0] <= 8000:
        atom_of = np.repeat(np.arange(len(norb)), norb)
        pair = np.eye(len(norb), dtype=bool)
        pair[ei[:, 0], ei[:, 1]] = True
        keep = pair[np.ix_(atom_of, atom_of)]
        out["dropped_max_abs_h"] = float(np.abs(h[~keep]).max(initial=0.0))
        if s is not None:
            out["dropped_max_abs_s"] = float(np.abs(s[~keep]).max(initial=0.0))
    return out
