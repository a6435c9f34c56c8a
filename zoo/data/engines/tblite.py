"""tblite adapter: GFN1-xTB (self-consistent tight binding), molecules and periodic cells.

tblite's `hamiltonian-matrix` is only the core H0. The self-consistent Hamiltonian is rebuilt
from the converged orbitals, F = S C diag(eps) C^T S (columns of C are the MOs, S C^ C^T S = S),
whose generalized eigenvalues equal tblite's orbital energies. Periodic runs are Gamma-point
calculations, so F and S are Gamma-folded (sum over lattice images).

Orbital order: per atom, shells as tblite lists them (Hf/Pt/W: d, s, p), m = -l..l within a
shell: the "xtb" convention row and the "gfn1-xtb" basis (checked against tblite's own
`angular-momenta` / `shell-map` on every call, and by rotation in tests/test_engines.py).

`overlap_images` gives the per-image overlap blocks S_ij(R) without a supercell or an SCF: the
GFN1 overlap of two atoms depends on their elements and displacement alone, so tblite computes
each pair as a dimer (benchmarks/tblite_overlap_cutoff.py, docs/datasets.md "Truncated S").
"""

from __future__ import annotations

import numpy as np

from zoo.data.engines.base import Engine, EngineError, EngineOutput
from zoo.data.format import Structure
from zoo.physics.units import BOHR_ANG

KELVIN_TO_HARTREE = 3.166811563e-6  # k_B in Hartree per Kelvin (CODATA 2018)


class TBLiteEngine(Engine):
    """GFN1-xTB through tblite's Python API.

    Options: `method` ("GFN1-xTB"), `temperature_k` (electronic temperature, Fermi smearing,
    default 1000 K: it speeds up SCC convergence and does not change an insulator's F),
    `max_iter` (SCC cycles before EngineError), `accuracy` (tblite's numerical threshold).
    """

    name = "tblite"
    package = "tblite"
    convention = "xtb"
    basis_name = "gfn1-xtb"

    def __init__(self, method: str = "GFN1-xTB", temperature_k: float = 1000.0, max_iter: int = 300,
                 accuracy: float = 1.0):
        if method.upper() != "GFN1-XTB":
            raise EngineError(f"tblite engine supports GFN1-xTB only (the 'gfn1-xtb' basis table); got {method!r}")
        self.method = "GFN1-xTB"
        self.temperature_k = float(temperature_k)
        self.max_iter = int(max_iter)
        self.accuracy = float(accuracy)

    def level_of_theory(self) -> dict:
        from importlib.metadata import version

        return {"code": "tblite", "code_version": version("tblite"), "method": self.method, "basis": self.basis_name,
                "electronic_temperature_K": self.temperature_k, "scc_max_iter": self.max_iter,
                "scc_accuracy": self.accuracy, "k_points": "Gamma", "charge": 0, "spin": "restricted",
                "hamiltonian": "self-consistent F = S C diag(eps) C^T S"}

    def _calculator(self, structure: Structure):
        from tblite.interface import Calculator

        kwargs = {}
        if structure.pbc.any():
            kwargs = {"lattice": structure.cell / BOHR_ANG, "periodic": structure.pbc.copy()}
        try:
            calc = Calculator(self.method, structure.numbers, structure.positions / BOHR_ANG, **kwargs)
        except Exception as exc:  # tblite raises its own ValueError/RuntimeError types
            raise EngineError(f"tblite could not set up the structure: {exc}") from None
        calc.set("save-integrals", 1)
        calc.set("temperature", self.temperature_k * KELVIN_TO_HARTREE)
        calc.set("max-iter", self.max_iter)
        calc.set("accuracy", self.accuracy)
        calc.set("verbosity", 0)
        return calc

    def _check_layout(self, calc, structure: Structure) -> None:
        """tblite's own shell list must equal the basis table's, atom by atom."""
        basis = self.basis()
        ang = np.asarray(calc.get("angular-momenta"))
        shell_atom = np.asarray(calc.get("shell-map"))
        for a, z in enumerate(structure.numbers):
            got = tuple(int(l) for l in ang[shell_atom == a])
            want = basis.element_shells(int(z))
            if got != want:
                raise EngineError(f"tblite's shells for Z={z} are {got}, the 'gfn1-xtb' basis table says {want}; "
                                  f"update zoo/physics/basis.py for this tblite version")

    def compute(self, structure: Structure) -> EngineOutput:
        calc = self._calculator(structure)
        self._check_layout(calc, structure)
        try:
            res = calc.singlepoint()
        except Exception as exc:
            msg = str(exc)
            if "not converged" in msg.lower():
                raise EngineError(f"tblite SCC not converged in {self.max_iter} cycles for {structure.n_atoms} atoms "
                                  f"({msg}); the structure is probably unphysical, or raise temperature_k / max_iter") from None
            raise EngineError(f"tblite failed: {msg}") from None
        s = np.asarray(res.get("overlap-matrix"))
        c = np.asarray(res.get("orbital-coefficients"))
        eps = np.asarray(res.get("orbital-energies"))
        occ = np.asarray(res.get("orbital-occupations"))
        sc = s @ c
        f = (sc * eps) @ sc.T
        f = 0.5 * (f + f.T)
        gap = _homo_lumo_gap(eps, occ)
        return EngineOutput(f, s, float(occ.sum()), {"energy_hartree": float(res.get("energy")),
                                                       "homo_lumo_gap_hartree": gap,
                                                       "max_abs_h_minus_h0": float(np.abs(f - res.get("hamiltonian-matrix")).max())})


def _tblite_overlap(numbers: np.ndarray, positions_ang: np.ndarray) -> np.ndarray:
    """tblite's GFN1 overlap matrix of a molecule (code order). The run stops after the integrals
    (max-iter 0): tblite reports an unconverged SCC, and its result already holds the overlap."""
    from tblite.interface import Calculator, Result

    calc = Calculator("GFN1-xTB", np.asarray(numbers), np.asarray(positions_ang) / BOHR_ANG)
    for key, value in (("save-integrals", 1), ("max-iter", 0), ("verbosity", 0)):
        calc.set(key, value)
    res = Result()
    try:
        calc.singlepoint(res)
    except Exception as exc:
        if "not converged" not in str(exc).lower():
            raise EngineError(f"tblite could not compute the overlap: {exc}") from None
    return np.asarray(res.get("overlap-matrix"))


def overlap_images(structure: Structure, cutoff: float, batch: int = 4):
    """GFN1-xTB overlap blocks S_ij(R) of every pair (i, j, R) with |r_j + R - r_i| < cutoff, one
    block per lattice image (no Gamma folding), and the on-site blocks S_ii(0).

    Returns (edge_index [E, 2], edge_shift [E, 3], s_onsite, s_offsite): ragged flat blocks in the
    internal convention, edges as zoo.data.graph.neighbor_graph orders them, i.e. the layout of a
    Record with image_convention "explicit". Each pair is a tblite dimer (i at the origin, j at
    r_j + R - r_i), `batch` dimers per tblite call, 40 A apart; only one of (i, j, R), (j, i, -R)
    is computed, the other is its transpose. Cost ~0.4 ms per pair on one core. Exact: the sum
    over images equals tblite's own Gamma-point overlap (tests/test_tblite_overlap.py).
    """
    from zoo.data.engines.base import orbital_reorder, to_internal
    from zoo.data.graph import edge_vectors_np, neighbor_graph, reverse_edge_index
    from zoo.physics.assembly import block_offsets
    from zoo.physics.basis import get_basis

    basis = get_basis(TBLiteEngine.basis_name)
    numbers = np.asarray(structure.numbers)
    norb = basis.norb_per_atom(numbers)
    ei, sh = neighbor_graph(numbers, structure.positions, structure.cell, structure.pbc, cutoff)
    vec = edge_vectors_np(structure.positions, structure.cell, ei, sh)
    rev = reverse_edge_index(ei, sh)
    e = np.arange(len(ei))
    first = np.flatnonzero((e < rev) | (rev < 0))  # (i, j, R) computed, (j, i, -R) transposed from it
    off_e = block_offsets(norb[ei[:, 0]], norb[ei[:, 1]])
    s_off = np.zeros(int(off_e[-1]))

    def internal(z: np.ndarray, pos: np.ndarray) -> np.ndarray:
        perm, sign = orbital_reorder(z, basis, "xtb")
        return to_internal(_tblite_overlap(z, pos), perm, sign)

    for a in range(0, len(first), batch):
        es = first[a:a + batch]
        z = numbers[ei[es]].reshape(-1)
        pos = np.zeros((2 * len(es), 3))
        pos[0::2, 0] = 40.0 * np.arange(len(es))
        pos[1::2] = pos[0::2] + vec[es]
        s = internal(z, pos)
        o = np.concatenate([[0], np.cumsum(basis.norb_per_atom(z))])
        for k, ek in enumerate(es):
            blk = s[o[2 * k]:o[2 * k + 1], o[2 * k + 1]:o[2 * k + 2]]
            s_off[off_e[ek]:off_e[ek + 1]] = blk.ravel()
            if rev[ek] != ek:
                s_off[off_e[rev[ek]]:off_e[rev[ek] + 1]] = blk.T.ravel()
    species = np.unique(numbers)  # on-site blocks: one isolated atom per element
    s = internal(species, np.outer(40.0 * np.arange(len(species)), [1.0, 0.0, 0.0]))
    o = np.concatenate([[0], np.cumsum(basis.norb_per_atom(species))])
    blocks = {int(z): s[o[k]:o[k + 1], o[k]:o[k + 1]].ravel() for k, z in enumerate(species)}
    s_on = np.concatenate([blocks[int(z)] for z in numbers]) if len(numbers) else np.zeros(0)
    return ei, sh, s_on, s_off


def _homo_lumo_gap(eps: np.ndarray, occ: np.ndarray) -> float:
    filled = occ > 1.0  # spin-summed occupations: 2 for doubly occupied
    if filled.all() or not filled.any():
        return float("nan")
    return float(eps[~filled].min() - eps[filled].max())
