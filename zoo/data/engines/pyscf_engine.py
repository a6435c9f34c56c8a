"""PySCF adapter: Kohn-Sham DFT for molecules (default PBE/def2-SVP, the MD17/SchNOrb level).

H is the converged Fock/KS matrix `mf.get_fock()`, S is `mf.get_ovlp()`, both in Hartree.
PySCF's spherical AO order: per atom, shells as the basis lists them (def2: by l, then n),
p as (px, py, pz) and m = -l..l for l >= 2: the "pyscf" convention row (checked by rotation in
tests/test_engines.py). Non-periodic structures only.
"""

from __future__ import annotations

import numpy as np

from zoo.data.engines.base import Engine, EngineError, EngineOutput
from zoo.data.format import Structure


class PySCFEngine(Engine):
    name = "pyscf"
    package = "pyscf"
    convention = "pyscf"
    basis_name = "def2-svp"

    def __init__(self, xc: str = "PBE", basis: str = "def2-svp", conv_tol: float = 1e-10, max_cycle: int = 100,
                 grid_level: int = 3):
        self.xc = xc
        self.basis_name = basis.lower()
        self.conv_tol = float(conv_tol)
        self.max_cycle = int(max_cycle)
        self.grid_level = int(grid_level)

    def level_of_theory(self) -> dict:
        from importlib.metadata import version

        return {"code": "pyscf", "code_version": version("pyscf"), "method": f"RKS {self.xc}", "xc": self.xc,
                "basis": self.basis_name, "conv_tol": self.conv_tol, "grid_level": self.grid_level,
                "charge": 0, "spin": "restricted", "hamiltonian": "converged Kohn-Sham matrix (get_fock)"}

    def molecule(self, structure: Structure):
        from pyscf import gto

        if structure.pbc.any():
            raise EngineError("the pyscf engine handles molecules only (pbc must be all False)")
        return gto.M(atom=[(int(z), tuple(p)) for z, p in zip(structure.numbers, structure.positions)],
                     unit="Angstrom", basis=self.basis_name, charge=0, spin=0, verbose=0)

    def _check_layout(self, mol, structure: Structure) -> None:
        basis = self.basis()
        for a, z in enumerate(structure.numbers):
            got = tuple(int(mol.bas_angular(b)) for b in range(mol.nbas) if mol.bas_atom(b) == a
                        for _ in range(mol.bas_nctr(b)))
            if got != basis.element_shells(int(z)):
                raise EngineError(f"PySCF's shells for Z={z} are {got}, basis table {basis.name!r} says "
                                  f"{basis.element_shells(int(z))}")

    def compute(self, structure: Structure) -> EngineOutput:
        from pyscf import dft

        mol = self.molecule(structure)
        self._check_layout(mol, structure)
        mf = dft.RKS(mol)
        mf.xc = self.xc
        mf.grids.level = self.grid_level
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        energy = mf.kernel()
        if not mf.converged:
            raise EngineError(f"PySCF SCF not converged in {self.max_cycle} cycles for {structure.n_atoms} atoms")
        h = np.asarray(mf.get_fock())
        s = np.asarray(mf.get_ovlp())
        return EngineOutput(0.5 * (h + h.T), s, float(mol.nelectron), {"energy_hartree": float(energy)})
