"""The CP2K engine, run through the installed binary (skipped when there is none).

Small grids keep it fast (H2O at 150 Ry, the 12-atom m-HfO2 cell at 120 Ry with EPS_DEFAULT 1e-8,
a two-atom Si cell at 100 Ry). The rotation tests check the "cp2k" convention row on CP2K's own
matrices: S is analytic (exact to ~1e-11); H of a molecule carries the grid's egg-box error
(~1e-3 Ha at 150 Ry, ~5e-5 at 300 Ry), while a rotated periodic cell rotates its grid along and
H follows to ~1e-7. A wrong convention is off by ~0.7.

Per-image blocks (`images=True`, a k-point run at Gamma with REAL_SPACE CSR output) are checked on
the Si cell against a Gamma-point run (their sum over images is its matrix), under a rotation
combined with a lattice translation of one atom (CP2K numbers images from wrapped positions),
and through a resumed catalogue build.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigh

from zoo.data.engines import EngineError, dense_to_record, get_engine
from zoo.data.engines.base import orbital_reorder, to_internal
from zoo.data.engines.cp2k_engine import CP2KEngine
from zoo.data.engines.cp2k_images import images_to_record, wrapped_positions
from zoo.data.format import Dataset, Structure
from zoo.physics.wigner import random_rotation, wigner_D_shells

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.skipif(not CP2KEngine.available(),
                                 reason="CP2K is not installed (no cp2k.psmp / cp2k.ssmp / cp2k on PATH, or ZOO_CP2K)")]

FAST_MOLECULE = dict(cutoff_ry=150.0, rel_cutoff_ry=30.0, vacuum=3.5, eps_scf=1e-7)
FAST_CELL = dict(cutoff_ry=120.0, rel_cutoff_ry=30.0, eps_default=1e-8, eps_scf=1e-6)
FAST_SI = dict(cutoff_ry=100.0, rel_cutoff_ry=30.0, eps_default=1e-8, eps_scf=1e-7)


def _water() -> Structure:
    from ase.build import molecule

    st = Structure.from_ase(molecule("H2O"))
    st.positions += np.array([[0.0, 0.02, -0.01], [0.03, 0.0, 0.0], [0.0, -0.04, 0.02]])  # no symmetry left
    return st


def _hfo2() -> Structure:
    from zoo.data.structures import monoclinic_hfo2

    return Structure.from_ase(monoclinic_hfo2())


def _si2(seed: int = 1) -> Structure:
    """Two-atom Si cell, rattled; atom 0 one lattice vector out and atom 1 at fractional ~0.75, so
    that CP2K wraps both into its window [-0.5, 0.5)."""
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43)
    atoms.set_scaled_positions([[0.0, 1.0, 0.0], [0.75, 0.75, 0.75]])
    atoms.rattle(0.05, seed=seed)
    return Structure.from_ase(atoms)


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


@pytest.fixture(scope="module")
def si_images(tmp_path_factory):
    """(engine, per-image record within 12 A, the kept run directory) of the Si cell: 12 A reaches
    past every pair CP2K lists (~10 A at EPS_DEFAULT 1e-8)."""
    work = tmp_path_factory.mktemp("si-images")
    eng = get_engine("cp2k", **FAST_SI, images=True, workdir=work)
    return eng, eng.record(_si2(), 12.0, "si"), work


def _edge_lookup(rec) -> dict[tuple[int, ...], int]:
    return {(int(i), int(j), *(int(x) for x in sh)): e for e, ((i, j), sh) in enumerate(zip(rec.edge_index,
                                                                                             rec.edge_shift))}


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
    (tmp_path / BASIS_FILE).write_text((real / BASIS_FILE).read_text())  # now the potential lacks Hf
    lines = (real / POTENTIAL_FILE).read_text().splitlines()
    (tmp_path / POTENTIAL_FILE).write_text("\n".join(ln for ln in lines if ln.split()[:1] != ["Hf"]))
    with pytest.raises(EngineError, match=rf"{tmp_path / POTENTIAL_FILE}: no potential GTH-PBE-q12 for element Hf"):
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


def test_a_killed_run_is_a_clear_error(tmp_path, monkeypatch):
    """CP2K killed mid-run (here by itself; the OOM killer sends the same SIGKILL)."""
    fake = tmp_path / "cp2k-killed"
    real = CP2KEngine().binary
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then exec {real} --version; fi\nkill -9 $$\n')
    fake.chmod(0o755)
    monkeypatch.setenv("ZOO_CP2K", str(fake))
    with pytest.raises(EngineError, match=r"CP2K was killed by signal 9 \(SIGKILL, out of memory\?\) on 3 atoms"):
        get_engine("cp2k", **FAST_MOLECULE).compute(_water())


# -- per-image blocks --------------------------------------------------------------------------

def test_images_input_and_level_of_theory():
    eng = CP2KEngine(images=True)
    st = _si2()
    text = eng.input_text(st)
    assert "SCHEME GAMMA" in text and text.count("REAL_SPACE T") == 2
    written = np.array([[float(x) for x in ln.split()[1:]] for ln in text.splitlines() if ln.strip().startswith("Si ")])
    assert np.allclose(written, wrapped_positions(st)[0], atol=1e-9)  # CP2K's own wrap leaves them in place
    assert "SCHEME MONKHORST-PACK 2 2 1" in CP2KEngine(images=True, kpoints=(2, 2, 1)).input_text(st)
    lot = eng.level_of_theory()
    assert lot["k_points"] == "Gamma (CP2K k-point code)" and "H(R), S(R)" in lot["hamiltonian"]
    gamma = CP2KEngine().level_of_theory()  # unchanged without images: recipe hashes of Gamma builds stay
    assert gamma["k_points"] == "Gamma"
    assert gamma["hamiltonian"] == "converged Kohn-Sham matrix (&KS_CSR_WRITE), Gamma point"
    mol = eng.input_text(_water())
    assert "&KPOINTS" not in mol and "REAL_SPACE" not in mol  # molecules have no images
    with pytest.raises(EngineError, match="needs images=True"):
        CP2KEngine(kpoints=(2, 2, 2))


def test_per_image_blocks_sum_to_the_gamma_point_matrices(si_images):
    eng, rec, _ = si_images
    gamma = get_engine("cp2k", **FAST_SI).compute(_si2())
    perm, sign = orbital_reorder(rec.numbers, eng.basis(), eng.convention)
    for which, dense, tol in (("H", gamma.h, 1e-6), ("S", gamma.s, 1e-10)):  # H: SCF precision (1e-9 measured)
        assert np.abs(rec.matrix(which).toarray() - to_internal(dense, perm, sign)).max() < tol
    meta = rec.meta
    assert meta["kept_frac_frobenius_h"] == 1.0 and meta["dropped_max_abs_h"] == 0.0  # every listed pair kept
    assert 0 < meta["edges_without_cp2k_block"] < rec.n_edges and 8.0 < meta["cp2k_longest_pair_A"] < 12.0
    assert meta["cp2k_images"] > 27 and meta["scf_steps"] > 1
    assert meta["cp2k_peak_rss_mib"] > 10 and meta["cp2k_cpu_s"] > 0


def test_a_smaller_cutoff_keeps_the_same_blocks(si_images):
    eng, rec, work = si_images
    st = _si2()
    small = images_to_record(st, work, "zoo", (work / "zoo.out").read_text(), eng.basis(), eng.convention,
                             wrapped_positions(st)[1], 4.0, "small")
    index, big = _edge_lookup(rec), rec.edge_blocks("H")
    for (i, j), sh, block in zip(small.edge_index, small.edge_shift, small.edge_blocks("H")):
        assert np.array_equal(block, big[index[(int(i), int(j), *(int(x) for x in sh))]])
    assert 0.9 < small.meta["kept_frac_frobenius_h"] < 1.0 and small.meta["dropped_max_abs_h"] > 1e-3


@pytest.mark.parametrize("which, tol", [("S", 1e-8), ("H", 5e-5)])
def test_per_image_blocks_rotate_and_follow_lattice_translations(si_images, which, tol, request):
    """The cell rotated about the origin, with atom 0 moved by -a + 2c (the same crystal): each
    edge (i, j, R) maps to (i, j, R + L_j - L_i) of the original, its block rotated by Wigner D."""
    eng, a, _ = si_images
    st = _si2()
    L = np.array([[-1, 0, 2], [0, 0, 0]])
    R = random_rotation(seed=3).numpy()
    if not hasattr(request.module, "_moved_record"):  # one CP2K run for both matrices
        moved = Structure(st.numbers, st.positions + L @ st.cell, st.cell, st.pbc)
        request.module._moved_record = get_engine("cp2k", **FAST_SI, images=True).record(_rotated(moved, R), 5.0, "b")
    b = request.module._moved_record
    D = [wigner_D_shells(eng.basis().element_shells(z), R).numpy() for z in st.numbers]
    err = max(np.abs(D[i] @ x @ D[i].T - y).max() for i, (x, y) in enumerate(zip(a.onsite_blocks(which),
                                                                                 b.onsite_blocks(which))))
    index, blocks_a = _edge_lookup(a), a.edge_blocks(which)
    for ((i, j), sh), y in zip(zip(b.edge_index, b.edge_shift), b.edge_blocks(which)):
        x = blocks_a[index[(int(i), int(j), *(int(v) for v in sh + L[j] - L[i]))]]
        err = max(err, np.abs(D[i] @ x @ D[j].T - y).max())
    assert b.n_edges > 20 and err < tol


@pytest.mark.slow  # three CP2K runs in two spawned builders: 25 s of CPU (30 s wall) here
def test_catalogue_build_with_cp2k_resumes_and_measures(monkeypatch, tmp_path):
    """`zoo data build NAME --engine cp2k` by the entry's cp2k recipe: a structure CP2K cannot do
    fails naming it, the finished ones stay and a re-run computes only the missing one; the card
    holds per-image blocks and what was measured."""
    import importlib
    from functools import partial

    import zoo.data.catalogue as cat
    from zoo.data.catalogue.recipes import given
    from zoo.errors import ZooError

    def entry(bad: bool) -> cat.Entry:
        he = Structure([2, 2], [[0.0, 0.0, 0.0], [1.5, 1.5, 1.5]], np.eye(3) * 4, True)  # He: no SZV-MOLOPT-SR

        def plan(e, size, seed):
            return [("train-0", "train", partial(_si2, 1)), ("val-0", "val", partial(_si2, 2)),
                    ("test-0", "test", partial(given, he) if bad else partial(_si2, 3))]

        return cat.Entry("tiny", "Si2 cells", "tblite", {"small": cat.Size(2.4, {})}, plan,
                         engines={"cp2k": cat.EngineRecipe({**FAST_SI, "images": True}, {"small": 4.0})})

    builder = importlib.import_module("zoo.data.catalogue.build")  # the package re-exports build() under that name
    monkeypatch.setattr(builder, "worker_env", lambda jobs, engine: {"OMP_NUM_THREADS": "1"})  # one core each
    monkeypatch.setitem(cat.CATALOGUE, "tiny", entry(bad=True))
    with pytest.raises(ZooError, match=r"structure 'test-0' failed: .*element He.*re-run to resume"):
        cat.build("tiny", cache=tmp_path, engine="cp2k", progress=False)
    staging = tmp_path / "tiny" / ".small-cp2k.partial" / "structures"
    assert sorted(p.name for p in staging.glob("*.h5")) == ["train-0.h5", "val-0.h5"]
    before = (staging / "train-0.h5").stat().st_mtime_ns

    monkeypatch.setitem(cat.CATALOGUE, "tiny", entry(bad=False))
    path = cat.ensure_built("tiny+cp2k", cache=tmp_path, progress=False)
    assert path == tmp_path / "tiny" / "small-cp2k" and not cat.is_built("tiny", cache=tmp_path)
    assert (path / "structures" / "train-0.h5").stat().st_mtime_ns == before  # not recomputed
    card = Dataset.open(path).card
    assert card.name == "tiny+cp2k" and card.image_convention == "explicit" and card.cutoff == 4.0
    assert card.level_of_theory["k_points"] == "Gamma (CP2K k-point code)"
    prov = card.provenance
    assert prov["engine_cost"]["max_scf_steps"] > 1 and prov["engine_cost"]["max_cp2k_peak_rss_mib"] > 10
    assert 0.9 < prov["truncation"]["min_kept_frac_frobenius_h"] < 1.0
    lowest = [prov["per_structure"][n]["s_min_eig_gamma"] for n in ("train-0", "val-0", "test-0")]
    assert prov["spectrum"]["s_min_eig"] == min(lowest)
