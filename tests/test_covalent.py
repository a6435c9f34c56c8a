"""a-Ge / a-PtGe2 / a-GST recipes produce plausible networks, and the checks have teeth."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from zoo.data import covalent as cv
from zoo.data.structures import density_g_cm3, elongated_cell, random_start


@pytest.fixture(scope="module")
def a_ge():
    # 64 atoms with a shortened schedule (~10-20 s); the catalogue runs 500 + 2000 MD steps
    return cv.amorphous_ge(64, seed=3, melt_steps=100, quench_steps=400, relax_steps=300)


def test_stillinger_weber_ge_reproduces_diamond_ge():
    ge = bulk("Ge", "diamond", a=5.658, cubic=True)
    ge.calc = cv.stillinger_weber_ge()
    assert ge.get_potential_energy() / len(ge) == pytest.approx(-3.86, abs=0.01)  # Ding-Andersen cohesive energy
    assert np.abs(ge.get_forces()).max() < 1e-8


def test_amorphous_ge_is_a_fourfold_network(a_ge):
    s = cv.coordination_stats(a_ge, 2.9)
    assert 3.7 <= s["cn_mean"]["Ge"] <= 4.4
    assert s["cn_hist"]["Ge"].get(4, 0) / 64 >= 0.6
    assert s["dmin"]["Ge-Ge"] > 2.2
    assert density_g_cm3(a_ge) == pytest.approx(cv.A_GE_DENSITY, rel=1e-6)


def test_random_start_is_not_a_fourfold_network():
    rng = np.random.default_rng(0)
    rand = random_start(["Ge"] * 64, elongated_cell(64 * 72.63, cv.A_GE_DENSITY), rng, {("Ge", "Ge"): 2.2})
    s = cv.coordination_stats(rand, 2.9)
    assert not (3.7 <= s["cn_mean"]["Ge"] <= 4.4 and s["cn_hist"]["Ge"].get(4, 0) / 64 >= 0.6)


def test_substitute_apart_avoids_bonded_pairs():
    ge = bulk("Ge", "diamond", a=5.658, cubic=True).repeat(2)  # 64 atoms, bipartite: 32 sites can be apart
    out = cv.substitute_apart(ge, "Pt", 12, seed=1)
    assert (out.numbers == 78).sum() == 12
    s = cv.coordination_stats(out, 2.9)
    assert "Pt-Pt" not in s["dmin"]
    many = cv.substitute_apart(ge, "Pt", 40, seed=1)  # more than any independent set: the rest at random
    assert (many.numbers == 78).sum() == 40
    assert "Pt-Pt" in cv.coordination_stats(many, 2.9)["dmin"]


def test_amorphous_ptge2_composition_volume_and_no_pt_pairs():
    a = cv.amorphous_ptge2(48, seed=2, melt_steps=100, quench_steps=300, relax_steps=200)
    assert a.get_chemical_formula() == "Ge32Pt16"
    ge_vol = 72.630 * 1.66053906660 / cv.A_GE_DENSITY
    assert a.get_volume() / len(a) == pytest.approx((cv.PT_FCC_VOLUME + 2 * ge_vol) / 3, rel=1e-3)
    s = cv.coordination_stats(a, 2.9)
    assert s["dmin"].get("Pt-Pt", 9.9) > 2.6  # no bonded Pt pairs in a 48-atom cell
    assert s["dmin"]["Ge-Pt"] > 2.0
    with pytest.raises(ValueError, match="multiple of 3"):
        cv.amorphous_ptge2(50, seed=2)


def test_gst_pair_melt_quench_is_chemically_ordered():
    a = cv.amorphous_gst(8, seed=4, gfn1_steps=0, melt_steps=200, quench_steps=400)
    assert a.get_chemical_formula() == "Ge8Sb16Te32"
    assert density_g_cm3(a) == pytest.approx(cv.A_GST_DENSITY, rel=1e-6)
    s = cv.coordination_stats(a, 3.2)
    assert s["dmin"]["Ge-Te"] > 2.5 and s["dmin"]["Sb-Te"] > 2.6
    assert "Te-Te" not in s["dmin"] or s["dmin"]["Te-Te"] > 3.0
    for cation in ("Ge", "Sb"):
        assert 3.0 <= s["cn_mean"][cation] <= 6.5
    assert 2.0 <= s["cn_mean"]["Te"] <= 4.5


@pytest.mark.slow
def test_gfn1_relaxation_lowers_gst_coordination():
    """The decorate-and-relax step does what the card claims (~2 min): Ge coordination drops."""
    a = cv.amorphous_gst(8, seed=4, gfn1_steps=0, melt_steps=200, quench_steps=400)
    r = cv.gfn1_relax(a, 25)
    before, after = cv.coordination_stats(a, 3.2), cv.coordination_stats(r, 3.2)
    assert after["cn_mean"]["Ge"] < before["cn_mean"]["Ge"]


def test_relaxation_stops_at_the_last_good_geometry_when_the_scc_fails():
    from ase.calculators.calculator import CalculationFailed
    from ase.calculators.emt import EMT

    class FailsOnFourthCall(EMT):
        calls = 0
        seen: list = []

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            FailsOnFourthCall.calls += 1
            if FailsOnFourthCall.calls == 4:
                raise CalculationFailed("SCF not converged in 300 cycles")
            super().calculate(atoms, properties, system_changes)
            FailsOnFourthCall.seen.append(atoms.positions.copy())

    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    cu.rattle(0.1, seed=1)
    out = cv.gfn1_relax(cu, 10, calc=FailsOnFourthCall())
    assert FailsOnFourthCall.calls == 4
    assert np.allclose(out.get_scaled_positions(), _wrapped(FailsOnFourthCall.seen[-1], cu.cell))


def _wrapped(pos, cell):
    from ase import Atoms

    return Atoms("Cu" * len(pos), positions=pos, cell=cell, pbc=True).get_scaled_positions()
