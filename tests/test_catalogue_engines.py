"""Catalogue builds with another engine than the entry's own (`zoo data build a-hfo2 --engine
cp2k`): the recipe each seed dataset carries for CP2K, and where such a build lives and what it is
called. No engine runs here; tests/test_engine_cp2k.py builds one with CP2K."""

from __future__ import annotations

import pytest

import zoo.data.catalogue as cat
from zoo.errors import ZooError


@pytest.mark.parametrize("name, basis, cutoff", [("a-hfo2", "szv-molopt-sr", 8.0), ("a-hfox", "szv-molopt-sr", 8.0),
                                                 ("a-ptge", "szv-molopt-sr", 8.0), ("a-gst", "dzvp-molopt-sr", 12.0)])
def test_seed_sets_build_with_cp2k_at_the_seed_level_of_theory(name, basis, cutoff):
    entry = cat.CATALOGUE[name]
    engine, options, cutoffs = entry.engine_recipe("cp2k")
    assert engine == "cp2k" and options == {"basis": basis, "images": True}
    assert set(cutoffs.values()) == {cutoff} and set(cutoffs) == set(entry.sizes)  # every size, per-image blocks
    # the default build is untouched: its engine, no options, its own cutoffs
    assert entry.engine_recipe() == ("tblite", {}, {k: v.cutoff for k, v in entry.sizes.items()})


def test_an_engine_without_a_recipe_runs_with_its_defaults():
    engine, options, cutoffs = cat.CATALOGUE["c-hfo2"].engine_recipe("CP2K")
    assert engine == "cp2k" and options == {} and cutoffs["small"] == cat.CATALOGUE["c-hfo2"].sizes["small"].cutoff


def test_other_engine_builds_live_beside_the_default(tmp_path):
    default = cat.dataset_path("a-hfo2", cache=tmp_path)
    assert cat.dataset_path("a-hfo2", cache=tmp_path, engine="cp2k") == tmp_path / "a-hfo2" / "small-cp2k" != default
    assert cat.dataset_path("a-hfo2+cp2k@paper", cache=tmp_path) == tmp_path / "a-hfo2" / "paper-cp2k"
    assert cat.dataset_path("a-hfo2", cache=tmp_path, engine="tblite") == default  # the entry's own engine
    assert cat.dataset_path("a-hfo2+unfolded", cache=tmp_path) == tmp_path / "a-hfo2" / "small-unfolded"
    assert cat.card_name("a-gst", "paper", engine="cp2k") == "a-gst+cp2k@paper"
    assert cat.split_variant("a-gst+cp2k+unfolded@medium") == ("a-gst@medium", "cp2k", True)
    assert cat.parse_name("a-gst+cp2k@medium")[1] == "medium"
    with pytest.raises(ZooError, match="more than one engine"):
        cat.split_variant("a-gst+cp2k+tblite")
    with pytest.raises(ZooError, match="names engine 'cp2k', but engine 'pyscf'"):
        cat.build("a-hfo2+cp2k", cache=tmp_path, engine="pyscf", progress=False)
    with pytest.raises(ZooError, match="stores per-image blocks already; --unfold is for Gamma-point builds"):
        cat.build("a-hfo2", cache=tmp_path, engine="cp2k", unfold=True, progress=False)
