"""The X2C1e-GKS (PBE) side of the pyscf-soc engine, for soc-molecules: the DZP-DKH shell table
against PySCF itself, the reference molecules, and a GKS record that is hermitian, time-reversal
symmetric and converts back to PySCF's spin-major matrix exactly. Its rotation test through PySCF
is parametrized into tests/test_soc_mini.py. HI in STO-3G (56 x 56 complex Fock) takes about a second.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyscf")

from zoo.data.engines import EngineError, get_engine  # noqa: E402
from zoo.data.engines.pyscf_soc import (_ALL_ELECTRON_BASES, SOC_MOLECULES, PySCFSOCEngine,  # noqa: E402
                                        displaced_molecule, reference_geometry, spin_orbital_reorder,
                                        spinful_dense_to_record)
from zoo.physics.basis import L_LETTERS, symbol_to_z  # noqa: E402

from tests.spinful_checks import assert_hermitian_and_time_reversal_symmetric  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NEW_MOLECULES = ("HI", "H2Se", "H2Te", "BiH3", "CH3I", "PbSe", "PbTe", "Bi2")


@pytest.fixture(scope="module")
def hi_pbe():
    """(engine, structure, EngineOutput) of a displaced HI, X2C1e-GKS PBE/STO-3G."""
    eng = get_engine("pyscf-soc", xc="PBE", basis="sto-3g")
    st = displaced_molecule("HI", seed=2)
    return eng, st, eng.compute(st)


def test_dzp_dkh_shells_are_pyscfs_own():
    """The table against PySCF's shells (mol.bas_*) and its AO labels, element by element."""
    from pyscf import gto

    basis = PySCFSOCEngine(basis="dzp-dkh").basis()
    for sym in _ALL_ELECTRON_BASES["dzp-dkh"]:
        z = symbol_to_z(sym)
        mol = gto.M(atom=[(z, (0.0, 0.0, 0.0))], basis="dzp-dkh", spin=z % 2, verbose=0)
        shells = tuple(int(mol.bas_angular(b)) for b in range(mol.nbas) for _ in range(mol.bas_nctr(b)))
        assert shells == basis.element_shells(z), sym
        # every AO label's l letter, in PySCF's AO order: shell by shell, 2l+1 functions each
        letters = [label.split()[2].lstrip("0123456789")[0] for label in mol.ao_labels()]
        assert letters == [L_LETTERS[l] for l in shells for _ in range(2 * l + 1)], sym
        assert mol.nao_nr() == basis.n_orbitals(z)


def test_reference_molecules_are_closed_shell_and_keep_their_geometry():
    for mol in NEW_MOLECULES:
        atoms = reference_geometry(mol)
        assert atoms.numbers.sum() % 2 == 0, mol
        assert mol in SOC_MOLECULES
        a, b = displaced_molecule(mol, seed=11).positions, displaced_molecule(mol, seed=11).positions
        assert np.array_equal(a, b) and 0 < np.abs(a - atoms.positions).max() < 0.3
    bi2, pbte = reference_geometry("Bi2"), reference_geometry("PbTe")
    assert bi2.get_distance(0, 1) == pytest.approx(2.660) and pbte.get_distance(0, 1) == pytest.approx(2.595)
    for mol, r, angle in (("H2Se", 1.460, 90.6), ("H2Te", 1.658, 90.3), ("BiH3", 1.778, 90.3)):
        atoms = reference_geometry(mol)
        n_h = len(atoms) - 1
        assert np.allclose(atoms.get_distances(0, list(range(1, n_h + 1))), r)
        for i in range(1, n_h + 1):
            for j in range(i + 1, n_h + 1):
                assert atoms.get_angle(i, 0, j) == pytest.approx(angle), mol


def test_level_of_theory_names_the_functional_and_keeps_the_ghf_card():
    """soc-mini's recipe hash hashes the GHF card: its keys stay as built; the GKS card adds the functional."""
    ghf = PySCFSOCEngine().level_of_theory()
    assert set(ghf) == {"code", "code_version", "method", "relativity", "basis", "conv_tol", "charge", "spin",
                        "spinful", "hamiltonian", "overlap"}
    assert ghf["method"] == "X2C1e-GHF" and ghf["hamiltonian"].startswith("converged GHF Fock")
    gks = PySCFSOCEngine(xc="PBE", basis="dzp-dkh").level_of_theory()
    assert gks["method"] == "X2C1e-GKS" and gks["xc"] == "PBE" and gks["basis"] == "dzp-dkh"
    assert gks["grid_level"] == 3 and gks["hamiltonian"].startswith("converged GKS Kohn-Sham")


def test_gks_record_is_hermitian_time_reversal_symmetric_and_round_trips(hi_pbe):
    eng, st, out = hi_pbe
    assert out.h.shape == (56, 56) and np.iscomplexobj(out.h)
    assert out.meta["kramers_max_abs_hartree"] < eng.kramers_tol
    assert out.meta["hermiticity_max_abs_hartree"] < eng.hermiticity_tol
    basis = eng.basis()
    rec = spinful_dense_to_record(st, out.h, out.s, basis, eng.convention, 10.0, "hi")
    assert rec.meta["dropped_max_abs_h"] == 0.0  # every atom pair is an edge
    assert_hermitian_and_time_reversal_symmetric(rec)
    # zoo order back to PySCF's spin-major order: M_code[perm][:, perm] = (sign sign^T) * M_zoo
    perm, sign = spin_orbital_reorder(st.numbers, basis, eng.convention)
    back = np.empty_like(out.h)
    back[np.ix_(perm, perm)] = rec.matrix("H").toarray() * np.outer(sign, sign)
    assert np.abs(back - out.h).max() == 0.0
    n = out.s.shape[0]
    s_back = np.empty((2 * n, 2 * n), dtype=complex)
    s_back[np.ix_(perm, perm)] = rec.matrix("S").toarray() * np.outer(sign, sign)
    assert np.array_equal(s_back, np.kron(np.eye(2), out.s))
    iodine = rec.onsite_blocks()[list(rec.numbers).index(53)]
    m = iodine.shape[0] // 2
    assert np.abs(iodine[:m, m:]).max() > 1.0  # the iodine core p spin-orbit terms (Hartree)


@pytest.mark.parametrize("setting, match", [
    ({"max_cycle": 1}, "not converged in 1 cycles for HI"),
    ({"kramers_tol": 0.0}, "time-reversal-broken solution for HI"),
    ({"hermiticity_tol": 0.0}, "of HI .* not hermitian"),
    ({"residual_tol": 0.0}, "short of self-consistency for HI"),
])
def test_each_check_is_an_error_naming_the_molecule(setting, match):
    eng = PySCFSOCEngine(xc="PBE", basis="sto-3g")
    for k, v in setting.items():
        setattr(eng, k, v)
    with pytest.raises(EngineError, match=match):
        eng.compute(displaced_molecule("HI", seed=2))


def test_open_shell_and_uncovered_elements_are_refused_by_name():
    from zoo.data.format import Structure

    eng = PySCFSOCEngine(xc="PBE", basis="dzp-dkh")
    with pytest.raises(EngineError, match=r"closed-shell molecule; H2Bi \(3 atoms\) has 85 electrons"):
        eng.compute(Structure([83, 1, 1], [[0, 0, 0], [0, 0, 1.78], [1.78, 0, 0]], np.zeros((3, 3)), False))
    with pytest.raises(EngineError, match=r"\(2 atoms\): .*\b9\b"):
        eng.compute(Structure([1, 9], [[0, 0, 0], [0, 0, 0.92]], np.zeros((3, 3)), False))
