"""PySCF two-component spin-orbit adapter: X2C1e with a GHF or GKS reference, spinful blocks for molecules.

Level of theory: the exact-two-component one-electron Hamiltonian (X2C1e: full molecular
decoupling of the one-electron Dirac equation, point nuclei, spin-orbit included through
sigma.(p V x p)) in the spin-orbital Gaussian basis, with either generalized Hartree-Fock
two-electron terms (Coulomb and exchange, `scf.GHF(mol).x2c1e()`; xc="HF") or generalized
Kohn-Sham ones (Coulomb plus a functional, `dft.GKS(mol).x2c1e()`; e.g. xc="PBE"). The
two-electron spin-orbit terms are not included. Closed-shell molecules only: their solution is
Kramers restricted (time-reversal symmetric), so H is unique and rotates with the molecule.
GKS uses PySCF's default collinear functional ('col': evaluated on rho and m_z); in a Kramers-
restricted state m = 0 everywhere, where the collinear, non-collinear and multi-collinear
functionals coincide, and the time-reversal check below guarantees that state.

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
from zoo.physics.basis import BasisSet, get_basis, parse_shells, symbol_to_z

if TYPE_CHECKING:
    from ase import Atoms

# All-electron bases PySCF holds for the heavy elements of soc-mini / soc-molecules (no ECP: X2C
# needs every electron) that the zoo basis table lacks; shells as PySCF lists them (by l, then n),
# checked against PySCF at every run (`PySCFEngine._check_layout`).
_ALL_ELECTRON_BASES: dict[str, dict[str, tuple[int, ...]]] = {
    "3-21g": {"H": (0, 0), "C": (0, 0, 0, 1, 1), "Br": (0, 0, 0, 0, 0, 1, 1, 1, 1, 2),
              "I": (0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2)},
    "sto-3g": {"H": (0,), "C": (0, 0, 1), "Br": (0, 0, 0, 0, 1, 1, 1, 2), "I": (0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2)},
    # Jorge and co-workers' DZP-DKH: segmented double zeta plus polarization, contracted for the
    # scalar-relativistic DKH2 Hamiltonian, H to Rn (PySCF's dzp-dkh.dat). The smallest all-electron
    # set PySCF ships with Pb and Bi: 63 functions there, against 210 in dyall-v2z and ANO-RCC's 164+.
    "dzp-dkh": {s: parse_shells(spec) for s, spec in {
        "H": "2s1p", "C": "4s2p1d", "Se": "8s6p2d1f", "Br": "8s6p2d1f", "Te": "8s6p3d1f", "I": "8s6p3d1f",
        "Pb": "8s7p4d2f", "Bi": "8s7p4d2f"}.items()},
}

# Reference geometries (Angstrom, degrees), closed shell. soc-mini: experimental r_e / r_0 from the
# NIST CCCBDB. soc-molecules: Bi2, PbSe, PbTe r_e of their closed-shell X 0+ ground states (Huber and
# Herzberg, Constants of Diatomic Molecules, 1979); H2Se, H2Te experimental r and angle (NIST CCCBDB);
# BiH3 r_e and angle from Jerzembeck et al., Angew. Chem. Int. Ed. 41, 2550 (2002).
_BONDS = {"HI": ("H", "I", 1.609), "HBr": ("H", "Br", 1.414), "IBr": ("I", "Br", 2.469), "I2": ("I", "I", 2.666),
          "Br2": ("Br", "Br", 2.281), "Bi2": ("Bi", "Bi", 2.660), "PbSe": ("Pb", "Se", 2.402),
          "PbTe": ("Pb", "Te", 2.595)}
_METHYL = {"CH3I": ("I", 2.139, 1.084, 107.6), "CH3Br": ("Br", 1.934, 1.082, 107.7)}  # X, r(C-X), r(C-H), angle HCX
_HYDRIDES = {"H2Se": ("Se", 2, 1.460, 90.6), "H2Te": ("Te", 2, 1.658, 90.3),  # X, n_H, r(X-H), angle HXH
             "BiH3": ("Bi", 3, 1.778, 90.3)}
SOC_MOLECULES: tuple[str, ...] = tuple(_BONDS) + tuple(_METHYL) + tuple(_HYDRIDES)


def _cone(r: float, tilt: float, n: int) -> list[tuple[float, float, float]]:
    """n points at distance r from the origin, `tilt` radians from the -z axis, evenly spread in azimuth."""
    out = []
    for k in range(n):
        phi = 2 * np.pi * k / n
        out.append((r * np.sin(tilt) * np.cos(phi), r * np.sin(tilt) * np.sin(phi), -r * np.cos(tilt)))
    return out


def reference_geometry(molecule: str) -> Atoms:
    """ase.Atoms of a spin-orbit reference molecule (`SOC_MOLECULES`) at its reference geometry:
    diatomics along z, C3v methyl halides and C2v / C3v hydrides with their axis along z."""
    from ase import Atoms

    if molecule in _BONDS:
        a, b, r = _BONDS[molecule]
        return Atoms(a + b, positions=[(0.0, 0.0, 0.0), (0.0, 0.0, r)])
    if molecule in _METHYL:
        x, r_cx, r_ch, angle = _METHYL[molecule]
        t = np.radians(180.0 - angle)  # H below the C, away from X
        return Atoms(x + "CH3", positions=[(0.0, 0.0, r_cx), (0.0, 0.0, 0.0)] + _cone(r_ch, t, 3))
    if molecule in _HYDRIDES:
        x, n_h, r, angle = _HYDRIDES[molecule]
        # the tilt beta of each X-H bond from the axis: cos(angle) = cos^2 beta + sin^2 beta cos(2 pi / n_h)
        c = np.cos(2 * np.pi / n_h)
        tilt = np.arccos(np.sqrt((np.cos(np.radians(angle)) - c) / (1 - c)))
        return Atoms(x + "H" * n_h, positions=[(0.0, 0.0, 0.0)] + _cone(r, tilt, n_h))
    raise EngineError(f"unknown spin-orbit reference molecule {molecule!r}; known: {', '.join(SOC_MOLECULES)}")


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
    """X2C1e spin-orbit Fock (xc="HF": GHF) or Kohn-Sham (GKS, e.g. xc="PBE") matrices of closed-shell
    molecules (see module docstring)."""

    name = "pyscf-soc"
    convention = "pyscf"
    basis_name = "3-21g"
    spinful = True
    #: largest |T(F) - F| (Hartree) accepted as time-reversal symmetric. From the symmetric start a Kramers-
    #: restricted SCF stays symmetric to round-off, GHF and GKS alike (the grid sees m = 0): measured 2e-11
    #: (HI, PBE/STO-3G) to 2e-9 (HI, HF/3-21G; Bi2 PBE/DZP-DKH 9e-10); a broken-symmetry state is off by >> 1e-7
    kramers_tol = 1e-7
    #: largest |F - F^dagger| (Hartree) accepted from get_fock before hermitizing; measured <= 1e-12 up to BiI3
    hermiticity_tol = 1e-8
    #: largest |F D S - S D F| (Hartree) of the kept state; measured 1e-8 (HI) to 2e-6 (Bi2, PBE/DZP-DKH)
    residual_tol = 1e-4

    def __init__(self, basis: str = "3-21g", conv_tol: float = 1e-10, max_cycle: int = 100, xc: str = "HF",
                 grid_level: int = 3):
        super().__init__(xc=xc, basis=basis, conv_tol=conv_tol, max_cycle=max_cycle, grid_level=grid_level)

    @property
    def kohn_sham(self) -> bool:
        return self.xc.upper() != "HF"

    @property
    def method(self) -> str:
        return "X2C1e-GKS" if self.kohn_sham else "X2C1e-GHF"

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

        # the GHF card is unchanged from soc-mini's first build (its recipe hash hashes this dict)
        lot = {"code": "pyscf", "code_version": version("pyscf"), "method": self.method,
               "relativity": "X2C1e (molecular one-electron decoupling, uncontracted basis for the X matrix, "
                             "point nuclei); spin-orbit from the one-electron term only",
               "basis": self.basis_name, "conv_tol": self.conv_tol, "charge": 0, "spin": "closed shell, Kramers "
               "restricted (time-reversal symmetric)", "spinful": True,
               "hamiltonian": "converged GHF Fock matrix (get_fock), complex, spin-major [[uu, ud], [du, dd]]",
               "overlap": "spinless AO overlap stored as kron(I2, S)"}
        if self.kohn_sham:
            lot.update(xc=self.xc, grid_level=self.grid_level,
                       collinear="col (PySCF's default; m = 0 in the Kramers-restricted state, where all agree)",
                       hamiltonian="converged GKS Kohn-Sham matrix (get_fock), complex, spin-major "
                                   "[[uu, ud], [du, dd]]")
        return lot

    def _mean_field(self, mol):
        from pyscf import dft, scf

        if not self.kohn_sham:
            return scf.GHF(mol).x2c1e()
        mf = dft.GKS(mol).x2c1e()
        mf.xc = self.xc
        mf.grids.level = self.grid_level
        return mf

    def compute(self, structure: Structure) -> EngineOutput:
        """Dense complex Fock (2n x 2n, PySCF's spin-major GHF order) and spinless S (n x n).

        EngineError, naming the molecule, for an open shell, an SCF that does not converge (or stops
        short of self-consistency), a Fock matrix that is not hermitian or one that breaks time reversal."""
        from pyscf import scf

        from zoo.physics.spin import time_reverse

        what = f"{structure.to_ase().get_chemical_formula()} ({structure.n_atoms} atoms)"
        try:
            self.basis().norb_per_atom(structure.numbers)
        except BasisError as exc:
            raise EngineError(f"pyscf-soc: {what}: {exc}") from None
        n_electrons = int(structure.numbers.sum())  # neutral
        if n_electrons % 2:
            raise EngineError(f"pyscf-soc needs a closed-shell molecule; {what} has {n_electrons} electrons")
        mol = self.molecule(structure)
        self._check_layout(mol, structure)
        mf = self._mean_field(mol)
        # the X2C decoupling is a third of the run on iodine; compute it once for the SCF and get_fock
        h1e = mf.get_hcore()
        mf.get_hcore = lambda *args, **kwargs: h1e
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        if self.kohn_sham:
            # PySCF closes with one plain Roothaan step from the DIIS-converged state; at the small PBE gaps of
            # Bi2 / PbTe that step is not contractive (displaced Bi2: |g| 9e-6 -> 6e-5) and turns a converged SCF
            # into "not converged". The commutator check below judges the state that is kept instead.
            mf.conv_check = False
        # PySCF's GHF guess tilts the spins on purpose (ghf._from_rhf_init_dm, breaksym); a closed shell then
        # returns to the Kramers state only to ~conv_tol. A time-reversal-symmetric start (the spin-free minao
        # density, half per spin) stays symmetric to round-off, so H is the Kramers-restricted solution.
        dm_half = 0.5 * scf.hf.init_guess_by_minao(mol)
        zero = np.zeros_like(dm_half)
        energy = mf.kernel(dm0=np.block([[dm_half, zero], [zero, dm_half]]))
        if not mf.converged:
            raise EngineError(f"PySCF {self.method} ({self.xc}/{self.basis_name}) not converged in {self.max_cycle} "
                              f"cycles for {what}")
        h = np.asarray(mf.get_fock())
        hermiticity = float(np.abs(h - h.conj().T).max())
        if hermiticity > self.hermiticity_tol:
            raise EngineError(f"PySCF {self.method} Fock matrix of {what} is not hermitian (max |F - F^dagger| = "
                              f"{hermiticity:.2e} Ha > {self.hermiticity_tol:g})")
        h = 0.5 * (h + h.conj().T)
        s2 = np.asarray(mf.get_ovlp())
        dm = np.asarray(mf.make_rdm1())
        residual = float(np.abs(h @ dm @ s2 - s2 @ dm @ h).max())  # F D S - S D F = 0 at self-consistency
        if residual > self.residual_tol:
            raise EngineError(f"PySCF {self.method} ({self.xc}/{self.basis_name}) stopped short of self-consistency "
                              f"for {what}: max |F D S - S D F| = {residual:.2e} Ha > {self.residual_tol:g}")
        n = mol.nao_nr()
        s = s2[:n, :n]  # GHF's overlap is block-diagonal kron(I2, S)
        # PySCF's AOs are real and its GHF order is spin-major over all n AOs, so Theta = kron(i sigma_y, I_n)
        # acts on the whole matrix at once. A broken-Kramers SCF solution is not the closed-shell state.
        kramers = float(np.abs(time_reverse(h) - h).max())
        if kramers > self.kramers_tol:
            raise EngineError(f"PySCF {self.method} converged to a time-reversal-broken solution for {what} (max "
                              f"|T(F) - F| = {kramers:.2e} Ha > {self.kramers_tol:g}); the spin-orbit datasets need "
                              f"Kramers-restricted molecules")
        occ = mf.mo_occ > 0
        gap = float(mf.mo_energy[~occ].min() - mf.mo_energy[occ].max())
        return EngineOutput(h, s, float(mol.nelectron), {"energy_hartree": float(energy), "homo_lumo_gap_hartree": gap,
                                                         "kramers_max_abs_hartree": kramers,
                                                         "hermiticity_max_abs_hartree": hermiticity,
                                                         "scf_residual_max_abs_hartree": residual})

    def record(self, structure: Structure, cutoff: float, name: str) -> Record:
        t0 = time.perf_counter()
        out = self.compute(structure)
        meta = {"engine": self.name, "wall_s": round(time.perf_counter() - t0, 3), **out.meta}
        return spinful_dense_to_record(structure, out.h, out.s, self.basis(), self.convention, cutoff, name,
                                       n_electrons=out.n_electrons, meta=meta)
