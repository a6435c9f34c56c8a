"""PySCF two-component spin-orbit adapter: X2C1e with a GHF reference, spinful blocks for molecules.

Level of theory: the exact-two-component one-electron Hamiltonian (X2C1e: full molecular
decoupling of the one-electron Dirac equation, point nuclei, spin-orbit included through
sigma.(p V x p)) in the spin-orbital Gaussian basis, with generalized Hartree-Fock two-electron
terms (Coulomb and exchange; the two-electron spin-orbit terms are not included, as in PySCF's
`scf.GHF(mol).x2c1e()`). Closed-shell molecules only: their GHF solution is Kramers restricted
(time-reversal symmetric), so H is unique and rotates with the molecule.

PySCF's GHF basis is spin-major over the whole molecule: index a < n is AO a with spin up
(alpha), n + a is AO a with spin down (beta); AOs in the "pyscf" orbital convention row. The
zoo spinful block of atoms (i, j) is complex (2 n_i x 2 n_j), [[uu, ud], [du, dd]] with each
quadrant n_i x n_j in the internal real-orbital convention (`spinful_dense_to_record`).

H is the converged Fock matrix F = h_X2C + J - K (complex hermitian), S is the spinless overlap
stored as kron(I2, S_ij) per block (complex), as the DeepH spinful importer stores it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import numpy as np

from zoo.data.engines.base import EngineError, EngineOutput, _gather, orbital_reorder, truncation_stats
from zoo.data.engines.pyscf_engine import PySCFEngine
from zoo.data.format import Record, Structure
from zoo.data.graph import neighbor_graph
from zoo.errors import BasisError
from zoo.physics.basis import BasisSet, get_basis, symbol_to_z

if TYPE_CHECKING:
    from ase import Atoms

# All-electron bases PySCF holds for the heavy elements of soc-mini (no ECP: X2C needs every
# electron) that the zoo basis table lacks; shells as PySCF lists them (by l, then n), checked
# against PySCF at every run (`PySCFEngine._check_layout`).
_ALL_ELECTRON_BASES: dict[str, dict[str, tuple[int, ...]]] = {
    "3-21g": {"H": (0, 0), "C": (0, 0, 0, 1, 1), "Br": (0, 0, 0, 0, 0, 1, 1, 1, 1, 2),
              "I": (0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2)},
    "sto-3g": {"H": (0,), "C": (0, 0, 1), "Br": (0, 0, 0, 0, 1, 1, 1, 2), "I": (0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2)},
}

# Reference geometries (Angstrom; experimental r_e / r_0 from the NIST CCCBDB), closed shell.
_BONDS = {"HI": ("H", "I", 1.609), "HBr": ("H", "Br", 1.414), "IBr": ("I", "Br", 2.469), "I2": ("I", "I", 2.666),
          "Br2": ("Br", "Br", 2.281)}
_METHYL = {"CH3I": ("I", 2.139, 1.084, 107.6), "CH3Br": ("Br", 1.934, 1.082, 107.7)}  # X, r(C-X), r(C-H), angle HCX
SOC_MOLECULES: tuple[str, ...] = tuple(_BONDS) + tuple(_METHYL)


def reference_geometry(molecule: str) -> Atoms:
    """ase.Atoms of a soc-mini molecule at its reference geometry (C3v methyl halides along z)."""
    from ase import Atoms

    if molecule in _BONDS:
        a, b, r = _BONDS[molecule]
        return Atoms(a + b, positions=[(0.0, 0.0, 0.0), (0.0, 0.0, r)])
    if molecule in _METHYL:
        x, r_cx, r_ch, angle = _METHYL[molecule]
        t = np.radians(180.0 - angle)  # H below the C, away from X
        pos = [(0.0, 0.0, r_cx), (0.0, 0.0, 0.0)]
        for k in range(3):
            phi = 2 * np.pi * k / 3
            pos.append((r_ch * np.sin(t) * np.cos(phi), r_ch * np.sin(t) * np.sin(phi), -r_ch * np.cos(t)))
        return Atoms(x + "CH3", positions=pos)
    raise EngineError(f"unknown soc-mini molecule {molecule!r}; known: {', '.join(SOC_MOLECULES)}")


def displaced_molecule(molecule: str, seed: int, rattle: float = 0.05) -> Structure:
    """The reference geometry with every atom displaced by N(0, rattle^2) per Cartesian component
    (Angstrom; numpy default_rng(seed)), non-periodic."""
    atoms = reference_geometry(molecule)
    atoms.positions += np.random.default_rng(seed).normal(0.0, rattle, atoms.positions.shape)
    return Structure.from_ase(atoms)


def spin_orbital_reorder(numbers: Sequence[int], basis: BasisSet, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """(perm, sign) over the 2n spin orbitals from a code's spin-major order (all AOs up, then all
    AOs down, each in `convention`) to zoo's atom-major spinful order: atom i's block rows are
    [its n_i orbitals up, its n_i orbitals down], each in the internal convention. Then
    M_zoo = (sign sign^T) * M_code[perm][:, perm], and atom i's rows are a contiguous 2 n_i range."""
    perm, sign = orbital_reorder(np.asarray(numbers), basis, convention)
    n = perm.size
    norb = basis.norb_per_atom(numbers)
    off = np.concatenate([[0], np.cumsum(norb)])
    p2, s2 = [], []
    for a in range(len(norb)):
        p, s = perm[off[a]:off[a + 1]], sign[off[a]:off[a + 1]]
        p2 += [p, p + n]
        s2 += [s, s]
    return np.concatenate(p2), np.concatenate(s2)


def spinful_dense_to_record(structure: Structure, h: np.ndarray, s: np.ndarray | None, basis: BasisSet,
                            convention: str, cutoff: float, name: str, n_electrons: float | None = None,
                            meta: dict | None = None) -> Record:
    """Dense spin-major H (2n x 2n complex, code order) and spinless S (n x n) -> spinful Record.

    Blocks (on-site and every edge within `cutoff`, both directions) are complex (2 n_i x 2 n_j)
    [[uu, ud], [du, dd]] in the internal convention; S blocks are kron(I2, S_ij). Molecules only.
    """
    if structure.pbc.any():
        raise EngineError("spinful dense conversion handles molecules only (pbc must be all False)")
    numbers = structure.numbers
    norb = basis.norb_per_atom(numbers)
    n = int(norb.sum())
    if h.shape != (2 * n, 2 * n):
        raise EngineError(f"spinful H has shape {h.shape}; basis {basis.name!r} needs ({2 * n}, {2 * n})")
    if s is not None and s.shape != (n, n):
        raise EngineError(f"spinless S has shape {s.shape}; basis {basis.name!r} needs ({n}, {n})")
    perm, sign = spin_orbital_reorder(numbers, basis, convention)
    signs = np.outer(sign, sign)
    h_int = np.asarray(h, dtype=np.complex128)[np.ix_(perm, perm)] * signs
    s_int = None
    if s is not None:
        s_int = np.kron(np.eye(2), np.asarray(s, dtype=np.float64))[np.ix_(perm, perm)] * signs
        s_int = s_int.astype(np.complex128)
    norb2 = 2 * norb
    off = np.concatenate([[0], np.cumsum(norb2)])
    ei, sh = neighbor_graph(numbers, structure.positions, structure.cell, structure.pbc, cutoff)
    atoms = np.arange(len(numbers))
    rec = Record(name, structure, basis, ei, sh,
                 _gather(h_int, off, norb2, atoms, atoms), _gather(h_int, off, norb2, ei[:, 0], ei[:, 1]),
                 None if s_int is None else _gather(s_int, off, norb2, atoms, atoms),
                 None if s_int is None else _gather(s_int, off, norb2, ei[:, 0], ei[:, 1]),
                 spinful=True, n_electrons=n_electrons, meta=dict(meta or {}))
    # moduli: the statistics (Frobenius fraction, largest dropped element) are those of |H|, and the helper is real
    rec.meta.update(truncation_stats(np.abs(h_int), None if s_int is None else np.abs(s_int),
                                     [np.abs(rec.h_onsite), np.abs(rec.h_offsite)], off, norb2, ei))
    return rec


class PySCFSOCEngine(PySCFEngine):
    """X2C1e-GHF spin-orbit Fock matrices of closed-shell molecules (see module docstring)."""

    name = "pyscf-soc"
    convention = "pyscf"
    basis_name = "3-21g"
    spinful = True
    #: largest |T(F) - F| (Hartree) accepted as time-reversal symmetric
    kramers_tol = 1e-7

    def __init__(self, basis: str = "3-21g", conv_tol: float = 1e-10, max_cycle: int = 100):
        super().__init__(xc="HF", basis=basis, conv_tol=conv_tol, max_cycle=max_cycle)

    def basis(self) -> BasisSet:
        if self.basis_name in _ALL_ELECTRON_BASES:
            table = _ALL_ELECTRON_BASES[self.basis_name]
            return BasisSet(self.basis_name, {symbol_to_z(s): ls for s, ls in table.items()})
        try:
            return get_basis(self.basis_name)
        except BasisError as exc:
            raise EngineError(f"pyscf-soc: {exc}; all-electron bases known here: "
                              f"{', '.join(sorted(_ALL_ELECTRON_BASES))}") from None

    def level_of_theory(self) -> dict:
        from importlib.metadata import version

        return {"code": "pyscf", "code_version": version("pyscf"), "method": "X2C1e-GHF",
                "relativity": "X2C1e (molecular one-electron decoupling, uncontracted basis for the X matrix, "
                              "point nuclei); spin-orbit from the one-electron term only",
                "basis": self.basis_name, "conv_tol": self.conv_tol, "charge": 0, "spin": "closed shell, Kramers "
                "restricted (time-reversal symmetric)", "spinful": True,
                "hamiltonian": "converged GHF Fock matrix (get_fock), complex, spin-major [[uu, ud], [du, dd]]",
                "overlap": "spinless AO overlap stored as kron(I2, S)"}

    def compute(self, structure: Structure) -> EngineOutput:
        """Dense complex Fock (2n x 2n, PySCF's spin-major GHF order) and spinless S (n x n)."""
        from pyscf import scf

        try:
            self.basis().norb_per_atom(structure.numbers)
        except BasisError as exc:
            raise EngineError(f"pyscf-soc: {exc}") from None
        n_electrons = int(structure.numbers.sum())  # neutral
        if n_electrons % 2:
            raise EngineError(f"pyscf-soc needs a closed-shell molecule; this one has {n_electrons} electrons")
        mol = self.molecule(structure)
        self._check_layout(mol, structure)
        mf = scf.GHF(mol).x2c1e()
        # the X2C decoupling is a third of the run on iodine; compute it once for the SCF and get_fock
        h1e = mf.get_hcore()
        mf.get_hcore = lambda *args, **kwargs: h1e
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        # PySCF's GHF guess tilts the spins on purpose (ghf._from_rhf_init_dm, breaksym); a closed shell then
        # returns to the Kramers state only to ~conv_tol. A time-reversal-symmetric start (the spin-free minao
        # density, half per spin) stays symmetric to round-off, so H is the Kramers-restricted solution.
        dm_half = 0.5 * scf.hf.init_guess_by_minao(mol)
        zero = np.zeros_like(dm_half)
        energy = mf.kernel(dm0=np.block([[dm_half, zero], [zero, dm_half]]))
        if not mf.converged:
            raise EngineError(f"PySCF X2C-GHF not converged in {self.max_cycle} cycles for {structure.n_atoms} atoms")
        h = np.asarray(mf.get_fock())
        h = 0.5 * (h + h.conj().T)
        n = mol.nao_nr()
        s = np.asarray(mf.get_ovlp())[:n, :n]  # GHF's overlap is block-diagonal kron(I2, S)
        # PySCF's AOs are real and its GHF order is spin-major over all n AOs, so Theta = kron(i sigma_y, I_n)
        # acts on the whole matrix at once. A broken-Kramers SCF solution is not the closed-shell state.
        from zoo.physics.spin import time_reverse

        kramers = float(np.abs(time_reverse(h) - h).max())
        if kramers > self.kramers_tol:
            raise EngineError(f"PySCF X2C-GHF converged to a time-reversal-broken solution (max |T(F) - F| = "
                              f"{kramers:.2e} Ha > {self.kramers_tol:g}); soc-mini needs Kramers-restricted molecules")
        occ = mf.mo_occ > 0
        gap = float(mf.mo_energy[~occ].min() - mf.mo_energy[occ].max())
        return EngineOutput(h, s, float(mol.nelectron), {"energy_hartree": float(energy), "homo_lumo_gap_hartree": gap,
                                                         "kramers_max_abs_hartree": kramers})

    def record(self, structure: Structure, cutoff: float, name: str) -> Record:
        t0 = time.perf_counter()
        out = self.compute(structure)
        meta = {"engine": self.name, "wall_s": round(time.perf_counter() - t0, 3), **out.meta}
        return spinful_dense_to_record(structure, out.h, out.s, self.basis(), self.convention, cutoff, name,
                                       n_electrons=out.n_electrons, meta=meta)

