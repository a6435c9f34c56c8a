"""The CP2K engine, run through the installed binary (skipped when there is none).

Small grids keep it fast (H2O at 150 Ry, the 12-atom m-HfO2 cell at 120 Ry with EPS_DEFAULT 1e-8;
~25 s in total on one core). The rotation tests check the "cp2k" convention row on CP2K's own
matrices: S is analytic (exact to ~1e-11); H of a molecule carries the grid's egg-box error
(~1e-3 Ha at 150 Ry, ~5e-5 at 300 Ry), while a rotated periodic cell rotates its grid along and
H follows to ~1e-7. A wrong convention is off by ~0.7.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigh

from zoo.data.engines import EngineError, dense_to_record, get_engine
from zoo.data.engines.cp2k_engine import CP2KEngine
from zoo.data.format import Structure
from zoo.physics.wigner import random_rotation, wigner_D_shells

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.skipif(not CP2KEngine.available(),
                                 reason="CP2K is not installed (no cp2k.psmp / cp2k.ssmp / cp2k on PATH, or ZOO_CP2K)")]

FAST_MOLECULE = dict(cutoff_ry=150.0, rel_cutoff_ry=30.0, vacuum=3.5, eps_scf=1e-7)
FAST_CELL = dict(cutoff_ry=120.0, rel_cutoff_ry=30.0, eps_default=1e-8, eps_scf=1e-6)


def _water() -> Structure:
    from ase.build import molecule

    st = Structure.from_ase(molecule("H2O"))
    st.positions += np.array([[0.0, 0.02, -0.01], [0.03, 0.0, 0.0], [0.0, -0.04, 0.02]])  # no symmetry left
    return st


def _hfo2() -> Structure:
    from zoo.data.structures import monoclinic_hfo2

    return Structure.from_ase(monoclinic_hfo2())


def _rotated(st: Structure, R: np.ndarray) -> Structure:
    """The structure rotated by R: a molecule about its centroid, a periodic cell (with its
    vectors) about the origin, which keeps fractional coordinates and so CP2K's grid unchanged."""
    c = np.zeros(3) if st.pbc.any() else st.positions.mean(axis=0)
    return Structure(st.numbers, (st.positions - c) @ R.T + c, st.cell @ R.T, st.pbc)


def _run_pair(options: dict, st: Structure, R: np.ndarray, cutoff: float):
    """(engine, dense output, record of st, record of st rotated): both records go through the
    engine's conversion to the internal convention (the first from the same dense run)."""
    eng = get_engine("cp2k", **options)
    out = eng.compute(st)
    a = dense_to_record(st, out.h, out.s, eng.basis(), eng.convention, cutoff, "a", n_electrons=out.n_electrons)
    b = eng.record(_rotated(st, R), cutoff, "b")
    return eng, out, a, b


def _rotation_error(eng, st: Structure, a, b, R: np.ndarray, which: str) -> float:
    assert np.array_equal(a.edge_index, b.edge_index) and a.n_edges > 0
    D = [wigner_D_shells(eng.basis().element_shells(z), R).numpy() for z in st.numbers]
    err = max(np.abs(D[i] @ x @ D[i].T - y).max() for i, (x, y) in enumerate(zip(a.onsite_blocks(which),
                                                                                 b.onsite_blocks(which))))
    for (i, j), x, y in zip(a.edge_index, a.edge_blocks(which), b.edge_blocks(which)):
        err = max(err, np.abs(D[i] @ x @ D[j].T - y).max())
    return float(err)


@pytest.fixture(scope="module")
def water():
    R = random_rotation(seed=5).numpy()
    return (*_run_pair(FAST_MOLECULE, _water(), R, 10.0), R)


@pytest.fixture(scope="module")
def hfo2():
    R = random_rotation(seed=4).numpy()
    return (*_run_pair(FAST_CELL, _hfo2(), R, 2.4), R)


def _check_matrices(out, n_orb: int) -> np.ndarray:
    assert out.h.shape == out.s.shape == (n_orb, n_orb)
    assert np.array_equal(out.h, out.h.T) and np.array_equal(out.s, out.s.T)
    assert np.linalg.eigvalsh(out.s).min() > 1e-4  # positive definite
    return eigh(out.h, out.s, eigvals_only=True)


def test_water_matrices(water):
    eng, out, a, _, _ = water
    assert out.n_electrons == 8.0  # GTH-PBE: O q6 + 2 x H q1 (also checked against CP2K's output)
    eps = _check_matrices(out, 6)  # SZV: O s p, H s
    assert np.allclose(np.diag(out.s), 1.0, atol=1e-6)  # normalized contractions (a molecule: no images folded in)
    n_occ = int(out.n_electrons) // 2
    assert eps[n_occ] - eps[n_occ - 1] > 0.2  # a closed-shell molecule: the HOMO-LUMO gap sits at n_el / 2
    assert out.meta["scf_steps"] > 1 and out.meta["smearing"] is False
    assert np.allclose(np.sort(a.eigvalsh()), eps, atol=1e-8)  # the internal-convention blocks hold the same H


def test_hfo2_cell_matrices_and_fermi_level(hfo2):
    eng, out, a, _, _ = hfo2
    assert out.n_electrons == 4 * 12 + 8 * 6  # Hf GTH-PBE-q12, O q6
    eps = _check_matrices(out, 4 * 10 + 8 * 4)  # SZV: Hf s s p d (10), O s p (4)
    assert out.meta["smearing"] is True  # default for periodic cells
    # the generalized eigenvalues of the returned H, S put exactly n_el / 2 levels below CP2K's Fermi level
    assert int((eps < out.meta["fermi_energy_hartree"]).sum()) == int(out.n_electrons) // 2
    assert a.meta["dropped_frac_frobenius_h"] > 0  # a 5 A cell: the 2.4 A cutoff drops folded blocks
    lot = eng.level_of_theory()
    assert lot["code_version"].startswith("20") and lot["k_points"] == "Gamma" and lot["xc"] == "PBE"
    assert lot["basis"] == "SZV-MOLOPT-SR-GTH" and lot["smearing"]["method"] == "Fermi-Dirac"


@pytest.mark.parametrize("which, tol", [("S", 1e-8), ("H", 5e-3)])
def test_cp2k_convention_by_rotating_water(water, which, tol):
    eng, _, a, b, R = water
    assert _rotation_error(eng, _water(), a, b, R, which) < tol


@pytest.mark.parametrize("which, tol", [("S", 1e-8), ("H", 5e-5)])  # H: ~5e-6 measured (SCF tolerance)
def test_cp2k_convention_by_rotating_a_periodic_cell(hfo2, which, tol):
    """Hf carries s, p and d shells: the l = 2 row of the convention, on a rotated (triclinic) cell."""
    eng, _, a, b, R = hfo2
    assert _rotation_error(eng, _hfo2(), a, b, R, which) < tol


def test_rotation_test_detects_a_wrong_convention(water):
    eng, out, a, b, R = water
    st = _water()
    wrong_a = dense_to_record(st, out.h, out.s, eng.basis(), "pyscf", 10.0, "a")  # p as (x, y, z): wrong for CP2K
    assert _rotation_error(eng, st, wrong_a, b, R, "S") > 0.1


def test_input_describes_the_level_of_theory():
    eng = CP2KEngine(plus_u={"Hf": 4.0}, temperature_k=500.0)
    text = eng.input_text(_hfo2())
    for piece in ("&XC_FUNCTIONAL PBE", "BASIS_SET SZV-MOLOPT-SR-GTH", "POTENTIAL GTH-PBE-q12", "POTENTIAL GTH-PBE-q6",
                  "PERIODIC XYZ", "CUTOFF 400.0", "METHOD FERMI_DIRAC", "ELECTRONIC_TEMPERATURE [K] 500.0",
                  "ADDED_MOS 10", "PLUS_U_METHOD MULLIKEN", "L 2", "U_MINUS_J [eV] 4.0", "&KS_CSR_WRITE", "&S_CSR_WRITE"):
        assert piece in text, piece
    assert "&KPOINTS" not in text  # Gamma point only
    mol = CP2KEngine().input_text(_water())
    assert "PSOLVER MT" in mol and "PERIODIC NONE" in mol and "SMEAR" not in mol
    assert "BASIS_SET DZVP-MOLOPT-SR-GTH" in CP2KEngine(basis="dzvp-molopt-sr").input_text(_hfo2())


def test_plus_u_changes_h_only(water):
    _, out, _, _, _ = water
    u = get_engine("cp2k", **FAST_MOLECULE, plus_u={"O": 3.0}).compute(_water())
    assert np.abs(u.s - out.s).max() < 1e-12  # +U is a potential: S is untouched
    assert np.abs(u.h - out.h).max() > 1e-2
    with pytest.raises(EngineError, match="unknown elements"):
        CP2KEngine(plus_u={"Xx": 1.0})


def test_scf_not_converged_is_a_clear_error():
    eng = get_engine("cp2k", **{**FAST_MOLECULE, "max_scf": 2})
    with pytest.raises(EngineError, match=r"SCF not converged in 2 steps(.|\n)*SCF run NOT converged"):
        eng.compute(_water())


def test_timeout_ends_the_run():
    eng = get_engine("cp2k", **{**FAST_MOLECULE, "timeout_s": 0.3})
    with pytest.raises(EngineError, match="exceeded the 0.3 s timeout"):
        eng.compute(_water())


def test_unknown_element_and_missing_data(tmp_path, monkeypatch):
    xe = Structure([54, 8], [[0.0, 0.0, 0.0], [0.0, 0.0, 2.5]], np.zeros((3, 3)), False)
    with pytest.raises(EngineError, match="element Xe"):
        CP2KEngine().input_text(xe)
    # a data directory whose basis file lacks Hf: the error names the file and the element
    from zoo.data.engines.cp2k_engine import BASIS_FILE, POTENTIAL_FILE

    real = CP2KEngine().data
    lines = (real / BASIS_FILE).read_text().splitlines()
    (tmp_path / BASIS_FILE).write_text("\n".join(ln for ln in lines if ln.split()[:1] != ["Hf"]))
    (tmp_path / POTENTIAL_FILE).write_text((real / POTENTIAL_FILE).read_text())
    monkeypatch.setenv("CP2K_DATA_DIR", str(tmp_path))
    with pytest.raises(EngineError, match=rf"{tmp_path / BASIS_FILE}: no basis SZV-MOLOPT-SR-GTH for element Hf"):
        CP2KEngine().input_text(_hfo2())
    with pytest.raises(EngineError, match="periodic in some directions"):
        CP2KEngine().input_text(Structure([8], [[0.0, 0.0, 0.0]], np.eye(3) * 5, [True, True, False]))


def test_missing_binary(monkeypatch):
    monkeypatch.setenv("ZOO_CP2K", "/nonexistent")
    assert not CP2KEngine.available()
    with pytest.raises(EngineError, match="not installed"):
        get_engine("cp2k")
    with pytest.raises(EngineError, match="ZOO_CP2K=/nonexistent is not an executable"):
        CP2KEngine()
    with pytest.raises(EngineError, match="unknown basis"):
        monkeypatch.delenv("ZOO_CP2K")
        CP2KEngine(basis="tzv2p")


def test_f_shells_by_rotating_the_overlap(tmp_path):
    """DZVP-MOLOPT-SR gives Hf an f shell: the l = 3 row of the convention, on CP2K's overlap of a
    bent HfO2 molecule (S needs no converged SCF: one step, the matrix taken from the kept run)."""
    from zoo.data.importers.cp2k import read_triplets

    st = Structure([72, 8, 8], [[0.0, 0.0, 0.0], [1.78, 0.31, -0.2], [-0.52, 1.66, 0.47]], np.zeros((3, 3)), False)
    R = random_rotation(seed=8).numpy()
    recs = []
    for k, s in enumerate((st, _rotated(st, R))):
        eng = CP2KEngine(basis="dzvp-molopt-sr", cutoff_ry=60.0, rel_cutoff_ry=20.0, vacuum=2.5, max_scf=1,
                         workdir=tmp_path / str(k))
        with pytest.raises(EngineError, match="SCF not converged"):
            eng.compute(s)
        n = int(eng.basis().norb_per_atom(st.numbers).sum())
        assert n == 3 + 6 + 10 + 7 + 2 * 13  # Hf s s s p p d d f, O s s p p d
        r, c, v = read_triplets(tmp_path / str(k) / "zoo-S_SPIN_1-1_0.csr", n)
        S = np.zeros((n, n))
        S[r, c] = v
        recs.append(dense_to_record(s, S, S, eng.basis(), eng.convention, 10.0, str(k)))
    assert _rotation_error(eng, st, *recs, R, "S") < 1e-8
