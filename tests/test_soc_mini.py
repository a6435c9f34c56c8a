"""soc-mini: spinful X2C1e-GHF Hamiltonians from PySCF, converted to zoo's spinful layout (and the
X2C1e-GKS engine of soc-molecules through the same rotation test).

The proof of the conversion is a rotation through PySCF itself: recompute a rotated molecule and
compare with D_s(R) H D_s(R)^dagger, D_s = kron(U(R), D_shells(R)) (zoo.physics.spin). A wrong
orbital convention, a swapped spin quadrant or a wrong spin rotation fails it at the 0.1-1 Ha
level; the right one holds to SCF convergence. Closed-shell molecules only, so the GHF state is
the unique Kramers-restricted one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("pyscf")

from zoo.data import catalogue as cat  # noqa: E402  (registers the pyscf-soc engine)
from zoo.data.engines import EngineError, get_engine  # noqa: E402
from zoo.data.engines.pyscf_soc import (PySCFSOCEngine, displaced_molecule, reference_geometry,  # noqa: E402
                                        spinful_dense_to_record)
from zoo.data.format import Dataset, Structure  # noqa: E402
from zoo.errors import ZooError  # noqa: E402
from zoo.physics.conventions import atom_transform  # noqa: E402
from zoo.physics.spin import rotate_spinful, time_reverse  # noqa: E402
from zoo.physics.wigner import random_rotation  # noqa: E402

from tests.spinful_checks import assert_hermitian_and_time_reversal_symmetric  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MEH = 1e3  # mE_h per Hartree


def _rotated(st: Structure, R: np.ndarray) -> Structure:
    c = st.positions.mean(axis=0)
    return Structure(st.numbers, (st.positions - c) @ R.T + c, st.cell, st.pbc)


def _rotation_error(eng: PySCFSOCEngine, outputs, st: Structure, R: np.ndarray, which: str,
                    convention: str = "pyscf") -> float:
    """max |B'_ij - D_s,i B_ij D_s,j^dagger| over on-site and edge blocks (Hartree), from the PySCF
    outputs of `st` and of `st` rotated by R, converted with `convention`."""
    a, b = (spinful_dense_to_record(x, out.h, out.s, eng.basis(), convention, 10.0, "r")
            for x, out in zip((st, _rotated(st, R)), outputs))
    assert np.array_equal(a.edge_index, b.edge_index)
    shells = [eng.basis().element_shells(z) for z in st.numbers]
    err = 0.0
    for i, (x, y) in enumerate(zip(a.onsite_blocks(which), b.onsite_blocks(which))):
        err = max(err, float(np.abs(rotate_spinful(x, shells[i], shells[i], R) - y).max()))
    for (i, j), x, y in zip(a.edge_index, a.edge_blocks(which), b.edge_blocks(which)):
        err = max(err, float(np.abs(rotate_spinful(x, shells[i], shells[j], R) - y).max()))
    return err


def _outputs(eng: PySCFSOCEngine, st: Structure, R: np.ndarray):
    return eng.compute(st), eng.compute(_rotated(st, R))


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """soc-mini through the catalogue (plan, engine registration, build worker, writer), cut to one
    geometry per molecule and split: HI, HBr, CH3I -> 9 structures in a few seconds."""
    entry = cat.CATALOGUE["soc-mini"]
    small = entry.sizes["small"]
    params = {**small.params, "molecules": ("HI", "HBr", "CH3I"), "counts": (1, 1, 1)}
    tiny = dataclasses.replace(entry, sizes={"small": dataclasses.replace(small, params=params)})
    mp = pytest.MonkeyPatch()
    mp.setitem(cat.CATALOGUE, "soc-mini", tiny)
    try:
        path = cat.build("soc-mini", cache=tmp_path_factory.mktemp("cache"), progress=False)
    finally:
        mp.undo()
    return Dataset.open(path)


@pytest.mark.parametrize("options, molecule, tol_meh", [
    ({}, "CH3I", 1e-4),  # X2C1e-GHF/3-21G (soc-mini): I s, p, d shells; C s, p; H s
    # X2C1e-GKS PBE/DZP-DKH (soc-molecules): Te s, p, d, f; H s, p. The DFT grid is fixed in the lab frame,
    # so the rotated molecule meets another quadrature: measured 2.0e-3 mE_h, against 80-95 mE_h for a wrong f
    # order or f sign (pyscf convention row) and 0.1-1 Ha for a wrong p order
    ({"xc": "PBE", "basis": "dzp-dkh"}, "H2Te", 2e-2),
], ids=["ghf-ch3i", "gks-pbe-h2te"])
def test_rotation_through_pyscf_matches_the_spinful_wigner_rotation(options, molecule, tol_meh):
    """A displaced molecule (no symmetry hides an error), rotated and recomputed by PySCF."""
    eng = PySCFSOCEngine(**options)
    st = displaced_molecule(molecule, seed=3)
    R = random_rotation(seed=7).numpy()
    assert np.linalg.det(R) > 0
    outputs = _outputs(eng, st, R)
    err_h = _rotation_error(eng, outputs, st, R, "H")
    print(f"{molecule} {eng.method} {eng.xc}/{eng.basis_name}: max |H_rot - D_s H D_s^dag| = {err_h * MEH:.2e} mE_h")
    assert err_h * MEH < tol_meh
    assert _rotation_error(eng, outputs, st, R, "S") < 1e-12


def test_rotation_test_detects_a_wrong_convention_and_a_wrong_spin_rotation():
    eng = PySCFSOCEngine()
    st = displaced_molecule("HBr", seed=4)
    R = random_rotation(seed=8).numpy()
    outputs = _outputs(eng, st, R)
    assert _rotation_error(eng, outputs, st, R, "H") < 1e-7
    assert _rotation_error(eng, outputs, st, R, "H", convention="internal") > 1e-2  # p as (y, z, x), not (x, y, z)
    # the orbital rotation alone (spin left unrotated) misses the spin-orbit blocks
    from zoo.physics.wigner import wigner_D_shells

    a, b = (spinful_dense_to_record(x, out.h, out.s, eng.basis(), "pyscf", 10.0, "r")
            for x, out in zip((st, _rotated(st, R)), outputs))
    shells = eng.basis().element_shells(35)
    D = np.kron(np.eye(2), wigner_D_shells(list(shells), R).numpy())
    x, y = a.onsite_blocks()[1], b.onsite_blocks()[1]  # Br
    assert x.shape == D.shape
    assert np.abs(D @ x @ D.T - y).max() > 1e-2


def test_stored_blocks_are_hermitian_time_reversal_symmetric_and_carry_soc(mini):
    assert mini.card.spinful and mini.card.has_overlap
    lot = mini.card.level_of_theory
    assert lot["method"] == "X2C1e-GHF" and lot["basis"] == "3-21g" and lot["code"] == "pyscf"
    for name in mini.names:
        rec = mini.read(name)
        assert_hermitian_and_time_reversal_symmetric(rec)
        # S = kron(I2, S_spinless): real, spin-diagonal, the same for both spins
        for s in rec.onsite_blocks("S") + rec.edge_blocks("S"):
            n, m = s.shape[0] // 2, s.shape[1] // 2
            assert np.abs(s.imag).max() == 0 and np.abs(s[:n, m:]).max() == 0 and np.abs(s[n:, :m]).max() == 0
            assert np.array_equal(s[:n, :m], s[n:, m:])
        for z, b in zip(rec.numbers, rec.onsite_blocks()):
            n = b.shape[0] // 2
            ud = np.abs(b[:n, n:]).max()
            if z == 53:
                assert ud * MEH > 1000  # iodine: the 2p/3p/4p core and 5p valence spin-orbit terms
            if z == 35:
                assert ud * MEH > 100


def test_spin_orbit_splits_the_hi_homo_and_keeps_kramers_pairs(mini):
    """HI's pi HOMO (4-fold without SOC) splits into pi_3/2 above pi_1/2; every level stays a Kramers pair."""
    hi = mini.read("test-HI-0")
    e = hi.eigvalsh()  # generalized problem with S, complex hermitian
    assert np.abs(e[0::2] - e[1::2]).max() < 1e-7
    ne = int(hi.n_electrons)
    split = e[ne - 1] - e[ne - 3]
    assert 5 < split * MEH < 40, f"HI pi_3/2 - pi_1/2 = {split * MEH:.1f} mE_h"  # X2C1e-GHF: ~16 mE_h (exp. ~24)


def test_splits_hold_different_geometries(mini):
    pos = {n: mini.read(n).positions for n in mini.names}
    for mol in ("HI", "HBr", "CH3I"):
        p = [pos[f"{s}-{mol}-0"] for s in ("train", "val", "test")]
        assert min(np.abs(p[0] - p[1]).max(), np.abs(p[0] - p[2]).max(), np.abs(p[1] - p[2]).max()) > 1e-3
        ref = reference_geometry(mol).positions
        assert np.abs(p[0] - ref).max() < 0.3  # small displacements of the reference


def test_dense_conversion_places_spin_quadrants_and_converts_orbitals():
    """H_code = kron(A, M) with a known spin matrix A: every stored block must be kron(A, T_i M_ij T_j^T)."""
    eng = PySCFSOCEngine()
    st = reference_geometry("HBr")
    st = Structure.from_ase(st)
    basis = eng.basis()
    norb = basis.norb_per_atom(st.numbers)
    n = int(norb.sum())
    rng = np.random.default_rng(0)
    m = rng.normal(size=(n, n))
    A = np.array([[1.0, 0.3 - 0.2j], [0.7 + 0.1j, -0.5]])
    rec = spinful_dense_to_record(st, np.kron(A, m), np.eye(n), basis, "pyscf", 10.0, "x")
    off = np.concatenate([[0], np.cumsum(norb)])
    T = [atom_transform(basis.element_shells(z), "pyscf") for z in st.numbers]

    def expect(i, j):
        return np.kron(A, T[i] @ m[off[i]:off[i + 1], off[j]:off[j + 1]] @ T[j].T)

    for i, b in enumerate(rec.onsite_blocks()):
        assert np.allclose(b, expect(i, i))
    for (i, j), b in zip(rec.edge_index, rec.edge_blocks()):
        assert np.allclose(b, expect(i, j))
    assert np.allclose(rec.onsite_blocks("S")[0], np.eye(2 * norb[0]))


def test_open_shell_and_unknown_molecules_are_refused():
    eng = get_engine("pyscf-soc")
    with pytest.raises(EngineError, match="closed-shell"):
        eng.compute(Structure([1, 35, 1], [[0, 0, -1.4], [0, 0, 0], [0, 0, 1.4]], np.zeros((3, 3)), False))
    with pytest.raises(EngineError, match="unknown spin-orbit reference molecule"):
        displaced_molecule("XeF2", seed=0)
    with pytest.raises(EngineError, match="Z=9|F"):
        eng.compute(Structure([1, 9], [[0, 0, 0], [0, 0, 0.92]], np.zeros((3, 3)), False))


def test_sto3g_basis_runs_with_its_own_shell_table():
    eng = PySCFSOCEngine(basis="sto-3g")
    rec = eng.record(displaced_molecule("HBr", seed=1), 10.0, "hbr")
    assert [b.shape[0] for b in rec.onsite_blocks()] == [2, 36]  # H: 1s; Br: 4 s, 3 p, 1 d shells, twice
    assert max(np.abs(time_reverse(b) - b).max() for b in rec.onsite_blocks() + rec.edge_blocks()) < 1e-7


@pytest.mark.slow
def test_full_soc_mini_build_takes_under_a_minute_of_cpu(tmp_path):
    """CPU time (this process and its build worker), not wall time: CI machines are shared."""
    import resource

    def cpu() -> float:
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))

    c0 = cpu()
    path = cat.build("soc-mini", cache=tmp_path, progress=False)
    used = cpu() - c0
    ds = Dataset.open(path)
    assert len(ds) == 25 and ds.card.spinful
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [15, 5, 5]
    print(f"soc-mini small: {used:.1f} s CPU")
    assert used < 60


def test_soc_molecules_unseen_split_holds_whole_molecules_out_of_training():
    """The molecule split: every geometry of a held-out molecule is in its split, none in train, and
    the geometries are the same displaced structures as the geometry split's (only the split differs)."""
    by_mol = cat.CATALOGUE["soc-molecules-unseen"]
    by_geo = cat.CATALOGUE["soc-molecules"]
    jobs = by_mol.plan(by_mol, "small", by_mol.seed)
    splits: dict[str, set[str]] = {}
    for name, split, _ in jobs:
        splits.setdefault(split, set()).add(name.split("-")[1])
    assert splits["val"] == {"Bi2"} and splits["test"] == {"H2Te"}
    assert not splits["train"] & (splits["val"] | splits["test"])
    geo = sorted(j[2].args for j in by_geo.plan(by_geo, "small", by_geo.seed))
    assert sorted(j[2].args for j in jobs) == geo
    bad = dataclasses.replace(by_mol, sizes={"small": dataclasses.replace(
        by_mol.sizes["small"], params={**by_mol.sizes["small"].params, "holdout": {"test": ("CO2",)}})})
    with pytest.raises(ZooError, match="holdout"):
        bad.plan(bad, "small", bad.seed)
