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
    "cp2k": "zoo.data.engines.cp2k_engine:CP2KEngine",
    "pyscf-soc": "zoo.data.engines.pyscf_soc:PySCFSOCEngine",
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
    #: Python package the engine drives (engines driving a binary override `available`)
    package: str = ""

    @classmethod
    def available(cls) -> bool:
        """True when the code can run here (package importable / binary on PATH)."""
        from importlib.util import find_spec

        return bool(cls.package) and find_spec(cls.package) is not None

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


def image_contamination(engine: Engine, structure: Structure, cutoff: float, repeat=(1, 2, 2)) -> dict:
    """How much Gamma folding changes the labelled blocks: compare the cell's blocks with the same
    atom pairs in a `repeat` supercell, whose images are further away. Returns the largest and
    mean absolute differences of H and S blocks (Hartree), the largest |H| for scale, and sizes."""
    from zoo.data.graph import edge_vectors_np

    small = engine.record(structure, cutoff, "cell")
    big_atoms = structure.to_ase().repeat(repeat)  # copy 0 holds atoms 0..N-1 at their own positions
    big = engine.record(Structure.from_ase(big_atoms), cutoff, "supercell")
    n = structure.n_atoms
    key = {}
    for e, (ij, v) in enumerate(zip(small.edge_index, edge_vectors_np(small.positions, small.cell, small.edge_index,
                                                                        small.edge_shift))):
        key[(int(ij[0]), int(ij[1]), *np.round(v, 4).tolist())] = e
    vb = edge_vectors_np(big.positions, big.cell, big.edge_index, big.edge_shift)
    out: dict = {"n_atoms_cell": n, "n_atoms_supercell": big.n_atoms, "repeat": list(repeat), "cutoff": cutoff}
    for which in ("H", "S"):
        sb, bb = small.edge_blocks(which), big.edge_blocks(which)
        diffs = [np.abs(a - b).ravel() for a, b in zip(small.onsite_blocks(which), big.onsite_blocks(which)[:n])]
        matched = 0
        for e, (ij, v) in enumerate(zip(big.edge_index, vb)):
            if ij[0] < n:
                k = key.get((int(ij[0]), int(ij[1]) % n, *np.round(v, 4).tolist()))
                if k is None:
                    raise EngineError("supercell edge without a partner in the cell (positions not a clean repeat?)")
                diffs.append(np.abs(sb[k] - bb[e]).ravel())
                matched += 1
        d = np.concatenate(diffs)
        out[f"max_abs_diff_{which}"] = float(d.max())
        out[f"mean_abs_diff_{which}"] = float(d.mean())
        out["edges_compared"] = matched
    out["max_abs_H"] = float(max(np.abs(small.h_onsite).max(), np.abs(small.h_offsite).max()))
    return out


def unfolded_record(engine: Engine, structure: Structure, cutoff: float, name: str, repeat=(1, 2, 2)) -> Record:
    """Per-image blocks H(R) of `structure` from one Gamma-point run on its `repeat` supercell.

    In the supercell, the image of atom j at shift R is a distinct atom (copy R mod repeat), and
    with supercell widths >= 2 x cutoff its folded block with the home copy of i is H_ij(R) plus
    images at least (width - cutoff) away. The result has image_convention "explicit": every image
    within the cutoff is its own edge, so the cell itself may be narrower than 2 x cutoff.
    """
    from zoo.data.graph import check_cell_for_cutoff

    m = np.asarray(repeat, dtype=np.int64)
    if m.shape != (3,) or (m < 1).any() or (m[~structure.pbc] != 1).any():
        raise EngineError(f"bad unfolding repeat {repeat} for pbc {structure.pbc.tolist()}")
    big_atoms = structure.to_ase().repeat(tuple(int(x) for x in m))
    check_cell_for_cutoff(np.asarray(big_atoms.cell), structure.pbc, cutoff)
    t0 = time.perf_counter()
    out = engine.compute(Structure.from_ase(big_atoms))
    basis = engine.basis()
    perm, sign = orbital_reorder(big_atoms.numbers, basis, engine.convention)
    h, s = to_internal(out.h, perm, sign), to_internal(out.s, perm, sign)
    n = structure.n_atoms
    norb_big = basis.norb_per_atom(big_atoms.numbers)
    off = np.concatenate([[0], np.cumsum(norb_big)])
    ei, sh = neighbor_graph(structure.numbers, structure.positions, structure.cell, structure.pbc, cutoff)
    wrapped = np.mod(sh, m)  # ase's repeat lists copies m0-major: index = (m0 * M1 + m1) * M2 + m2
    j_big = ei[:, 1] + n * ((wrapped[:, 0] * m[1] + wrapped[:, 1]) * m[2] + wrapped[:, 2])
    atoms = np.arange(n)
    rec = Record(name, structure, basis, ei, sh,
                 _gather(h, off, norb_big, atoms, atoms), _gather(h, off, norb_big, ei[:, 0], j_big),
                 _gather(s, off, norb_big, atoms, atoms), _gather(s, off, norb_big, ei[:, 0], j_big),
                 n_electrons=out.n_electrons / int(m.prod()),
                 meta={"engine": engine.name, "wall_s": round(time.perf_counter() - t0, 3), **out.meta,
                       "unfolded_from_supercell": m.tolist()})
    return rec
