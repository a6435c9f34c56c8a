"""tblite adapter: GFN1-xTB (self-consistent tight binding), molecules and periodic cells.

tblite's `hamiltonian-matrix` is only the core H0. The self-consistent Hamiltonian is rebuilt
from the converged orbitals, F = S C diag(eps) C^T S (columns of C are the MOs, S C^ C^T S = S),
whose generalized eigenvalues equal tblite's orbital energies. Periodic runs are Gamma-point
calculations, so F and S are Gamma-folded (sum over lattice images).

Orbital order: per atom, shells as tblite lists them (Hf/Pt/W: d, s, p), m = -l..l within a
shell: the "xtb" convention row and the "gfn1-xtb" basis (checked against tblite's own
`angular-momenta` / `shell-map` on every call, and by rotation in tests/test_engines.py).
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


def _homo_lumo_gap(eps: np.ndarray, occ: np.ndarray) -> float:
    filled = occ > 1.0  # spin-summed occupations: 2 for doubly occupied
    if filled.all() or not filled.any():
        return float("nan")
    return float(eps[~filled].min() - eps[filled].max())
