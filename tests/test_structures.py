"""Structures: the pair potential is a correct ASE calculator, and melt-quenched a-HfO2 is a
physically plausible network (not a random packing)."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data import structures as st


@pytest.fixture(scope="module")
def a_hfo2():
    # 32 formula units with a shortened schedule: ~10 s; the catalogue uses the full schedule
    return st.amorphous_hfo2(32, seed=5, melt_steps=200, quench_steps=300, relax_steps=500)


def test_pair_potential_forces_match_finite_differences():
    rng = np.random.default_rng(1)
    cell = st.elongated_cell(8 * 210.49, 9.7)
    atoms = st.random_start(["Hf"] * 8 + ["O"] * 16, cell, rng, {("Hf", "Hf"): 2.4, ("O", "O"): 1.8, ("Hf", "O"): 1.5})
    atoms.calc = st.PairPotential(st.HFO2_POTENTIAL)
    f = atoms.get_forces()
    assert np.abs(f.sum(axis=0)).max() < 1e-10  # Newton's third law
    for k, c in ((3, 0), (17, 2)):
        h = 1e-5
        atoms.positions[k, c] += h
        ep = atoms.get_potential_energy()
        atoms.positions[k, c] -= 2 * h
        em = atoms.get_potential_energy()
        atoms.positions[k, c] += h
        assert f[k, c] == pytest.approx(-(ep - em) / (2 * h), rel=1e-5, abs=1e-7)


def test_elongated_cell_has_target_density_and_shape(a_hfo2):
    lx, ly, lz = a_hfo2.cell.lengths()
    assert lx == pytest.approx(2 * ly) and ly == pytest.approx(lz)
    assert st.density_g_cm3(a_hfo2) == pytest.approx(9.7, rel=1e-6)
    assert a_hfo2.get_chemical_formula() == "Hf32O64"


def test_amorphous_hfo2_is_a_plausible_network(a_hfo2):
    s = st.network_stats(a_hfo2)
    assert 5.5 <= s["cn_mean"] <= 8.0  # Hf by O: a-HfO2 is 6-7 fold (crystal m-HfO2: 7)
    assert min(s["cn_hist"]) >= 4 and max(s["cn_hist"]) <= 9
    assert 2.8 <= s["cn_O_by_Hf_mean"] <= 4.0
    assert s["dmin_HfHf"] > 2.9 and s["dmin_OO"] > 2.3 and s["dmin_HfO"] > 1.85
    assert 1.95 <= s["gr_first_peak"] <= 2.3


def test_random_packing_is_not_a_network():
    """The same statistics reject the melt's random start: the test above has teeth."""
    rng = np.random.default_rng(2)
    cell = st.elongated_cell(32 * 210.49, 9.7)
    rand = st.random_start(["Hf"] * 32 + ["O"] * 64, cell, rng, {("Hf", "Hf"): 2.4, ("O", "O"): 1.8, ("Hf", "O"): 1.5})
    s = st.network_stats(rand)
    assert s["dmin_HfHf"] < 2.9 or s["dmin_OO"] < 2.3 or not 5.5 <= s["cn_mean"] <= 8.0


def test_monoclinic_hfo2_is_sevenfold():
    s = st.network_stats(st.monoclinic_hfo2())
    assert s["cn_hist"] == {7: 4}
    assert st.density_g_cm3(st.monoclinic_hfo2()) == pytest.approx(10.1, abs=0.1)


def test_oxygen_vacancies_remove_oxygen_only(a_hfo2):
    out = st.remove_oxygen(a_hfo2, 0.10, seed=0)
    assert (out.numbers == 72).sum() == 32 and (out.numbers == 8).sum() == 64 - 6


def test_md_snapshots_are_distinct_and_bonded():
    snaps = st.md_snapshots("H2O", 5, seed=0, every=5)
    assert len(snaps) == 5
    assert np.abs(snaps[0].positions - snaps[1].positions).max() > 1e-3
    for s in snaps:
        d = s.get_all_distances()
        assert 0.85 < d[0, 1] < 1.15 and 0.85 < d[0, 2] < 1.15  # O-H bonds stay bonded at 500 K
