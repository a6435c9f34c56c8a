"""Engines: the convention rows are checked by rotating molecules through the codes themselves.

If D(R) is the internal Wigner-D of each atom's shells, a rotated molecule's blocks must be
D_i B_ij D_j^T after conversion. A wrong permutation or sign in zoo.physics.conventions ("xtb",
"pyscf") breaks this at the 1e-1 level; the right one holds to SCF convergence (~1e-7).
"""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.engines import EngineError, dense_to_record, get_engine
from zoo.data.format import Structure
from zoo.errors import GraphError
from zoo.physics.wigner import random_rotation, wigner_D_shells

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _hf_oh4() -> Structure:
    """Hf(OH)4, distorted so that no symmetry hides a sign error (Hf has d, s, p shells)."""
    rng = np.random.default_rng(3)
    o = np.array([[1.95, 0.1, 0.0], [-0.6, 1.85, 0.3], [-0.7, -0.9, 1.7], [-0.5, -0.8, -1.8]])
    h = o * 1.5 + np.array([0.3, -0.2, 0.25])
    pos = np.vstack([[0.0, 0.0, 0.0], o, h]) + rng.normal(scale=0.05, size=(9, 3))
    return Structure([72, 8, 8, 8, 8, 1, 1, 1, 1], pos, np.zeros((3, 3)), False)


def _water_ethanol_like() -> Structure:
    from ase.build import molecule

    at = molecule("CH3CH2OH")
    at.positions += np.random.default_rng(0).normal(scale=0.03, size=at.positions.shape)
    return Structure.from_ase(at)


def _rotated(st: Structure, R: np.ndarray) -> Structure:
    c = st.positions.mean(axis=0)
    return Structure(st.numbers, (st.positions - c) @ R.T + c, st.cell, st.pbc)


def _max_rotation_error(engine, st: Structure, R: np.ndarray, which: str) -> float:
    basis = engine.basis()
    a = engine.record(st, 20.0, "a")
    b = engine.record(_rotated(st, R), 20.0, "b")
    assert np.array_equal(a.edge_index, b.edge_index)
    D = [wigner_D_shells(basis.element_shells(z), R).numpy() for z in st.numbers]
    err = 0.0
    for i, (x, y) in enumerate(zip(a.onsite_blocks(which), b.onsite_blocks(which))):
        err = max(err, np.abs(D[i] @ x @ D[i].T - y).max())
    for (i, j), x, y in zip(a.edge_index, a.edge_blocks(which), b.edge_blocks(which)):
        err = max(err, np.abs(D[i] @ x @ D[j].T - y).max())
    return err


@pytest.mark.parametrize("which", ["S", "H"])
def test_xtb_convention_by_rotating_through_tblite(which):
    eng = get_engine("tblite", accuracy=0.01)
    R = random_rotation(seed=11).numpy()
    tol = 1e-9 if which == "S" else 1e-5
    assert _max_rotation_error(eng, _hf_oh4(), R, which) < tol


def test_xtb_rotation_test_detects_a_wrong_convention(monkeypatch):
    eng = get_engine("tblite", accuracy=0.01)
    monkeypatch.setattr(eng, "convention", "pyscf")  # p as (x, y, z): wrong for tblite
    assert _max_rotation_error(eng, _hf_oh4(), random_rotation(seed=11).numpy(), "S") > 1e-2


@pytest.mark.parametrize("which", ["S", "H"])
def test_pyscf_convention_by_rotating_through_pyscf(which):
    from zoo.data.engines.pyscf_engine import PySCFEngine

    eng = PySCFEngine(basis="def2-svp", conv_tol=1e-11, grid_level=5)
    from ase.build import molecule

    st = Structure.from_ase(molecule("H2O"))
    st.positions += np.array([[0.0, 0.02, -0.01], [0.03, 0.0, 0.0], [0.0, -0.04, 0.02]])
    R = random_rotation(seed=5).numpy()
    tol = 1e-9 if which == "S" else 2e-5  # the DFT grid is not rotation invariant
    assert _max_rotation_error(eng, st, R, which) < tol


def test_pyscf_d_shells_by_rotation():
    """Ethanol's C/O carry d shells in def2-SVP: checks the l=2 row of the pyscf convention."""
    from zoo.data.engines.pyscf_engine import PySCFEngine

    eng = PySCFEngine()
    st = _water_ethanol_like()

    def s_only(structure):
        mol = eng.molecule(structure)
        return dense_to_record(structure, mol.intor("int1e_ovlp"), None, eng.basis(), "pyscf", 20.0, "s")

    a, b = s_only(st), s_only(_rotated(st, random_rotation(seed=2).numpy()))
    R = random_rotation(seed=2).numpy()
    D = [wigner_D_shells(eng.basis().element_shells(z), R).numpy() for z in st.numbers]
    err = max(np.abs(D[i] @ x @ D[j].T - y).max() for (i, j), x, y in zip(a.edge_index, a.edge_blocks(), b.edge_blocks()))
    assert err < 1e-9


def test_tblite_self_consistent_h_reproduces_orbital_energies():
    eng = get_engine("tblite")
    st = _hf_oh4()
    out = eng.compute(st)
    from scipy.linalg import eigh

    eps = eigh(out.h, out.s, eigvals_only=True)
    rec = eng.record(st, 20.0, "x")
    assert np.allclose(np.sort(rec.eigvalsh()), eps, atol=1e-8)
    assert out.n_electrons == pytest.approx(4 + 4 * 6 + 4)  # Hf 4 valence, O 6, H 1
    assert out.meta["max_abs_h_minus_h0"] > 1e-3  # F is not the core H0


def test_periodic_cell_is_gamma_folded_and_checked():
    from zoo.data.structures import monoclinic_hfo2

    st = Structure.from_ase(monoclinic_hfo2())
    eng = get_engine("tblite")
    with pytest.raises(GraphError, match="cell too small"):
        eng.record(st, 4.0, "c")  # 5.1 A cell: too small for a 4 A cutoff
    rec = eng.record(st, 2.5, "c")
    assert rec.n_edges > 0 and rec.meta["dropped_frac_frobenius_h"] > 0


def test_scc_failure_is_a_clear_error():
    eng = get_engine("tblite", max_iter=2)
    with pytest.raises(EngineError, match="SCC not converged"):
        eng.compute(_hf_oh4())


def test_unknown_engine_and_method():
    with pytest.raises(EngineError, match="unknown engine"):
        get_engine("vasp")
    with pytest.raises(EngineError, match="GFN1"):
        get_engine("tblite", method="GFN2-xTB")


def test_image_contamination_shrinks_with_cell_size():
    """12-atom m-HfO2 vs its 2x2x2 supercell: the folded blocks differ (Hf 6p is diffuse), and the
    comparison covers every labelled block of the cell."""
    from zoo.data.engines import image_contamination
    from zoo.data.structures import monoclinic_hfo2

    st = Structure.from_ase(monoclinic_hfo2())
    out = image_contamination(get_engine("tblite"), st, 2.4, repeat=(2, 2, 2))
    assert out["edges_compared"] == get_engine("tblite").record(st, 2.4, "c").n_edges
    assert 1e-3 < out["max_abs_diff_S"] < 1.0 and out["max_abs_diff_H"] > 1e-3


def test_unfolded_record_matches_direct_blocks_and_is_hermitian():
    """Explicit per-image blocks from a 2x2x2 supercell of a 12-atom cell: each image its own edge,
    H_ji(-R) = H_ij(R)^T, and a block far from every image equals the folded cell's block
    within the contamination the folding brings."""
    from zoo.data.engines.base import unfolded_record
    from zoo.data.format import Record
    from zoo.data.structures import monoclinic_hfo2
    from zoo.data.validate import validate_record

    st = Structure.from_ase(monoclinic_hfo2())
    eng = get_engine("tblite")
    rec = unfolded_record(eng, st, 4.5, "u", repeat=(2, 2, 2))  # 4.5 A > half the 5.1 A cell: explicit only
    validate_record(rec, cutoff=4.5, image_convention="explicit")
    assert rec.n_electrons == pytest.approx(4 * 4 + 8 * 6)
    key = {(i, j, *s): e for e, ((i, j), s) in enumerate(zip(rec.edge_index.tolist(), rec.edge_shift.tolist()))}
    blocks = rec.edge_blocks("H")
    assert len({(i, j) for i, j, *_ in key}) < len(key)  # two images of one neighbour: explicit edges
    for (i, j, *s), e in key.items():
        assert np.allclose(blocks[e], blocks[key[(j, i, *(-np.array(s)).tolist())]].T, atol=1e-8)
    assert isinstance(rec, Record) and rec.meta["unfolded_from_supercell"] == [2, 2, 2]
