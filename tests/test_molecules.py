"""MD17-style starting geometries: right formula, connectivity kept by the GFN1 relaxation."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.molecules import bonded_pairs, molecule_geometry
from zoo.errors import ZooError


@pytest.mark.parametrize("name, formula, bonds", [("uracil", "C4H4N2O2", 12), ("malondialdehyde", "C3H4O2", 8)])
def test_typed_molecules_relax_without_changing_connectivity(name, formula, bonds):
    raw = molecule_geometry(name, relax=False)
    relaxed = molecule_geometry(name)
    assert relaxed.get_chemical_formula(mode="hill") == formula
    assert bonded_pairs(raw) == bonded_pairs(relaxed) and len(bonded_pairs(relaxed)) == bonds
    assert np.allclose(relaxed.positions.mean(axis=0), 0.0, atol=1e-10)
    assert np.abs(relaxed.positions - raw.positions + raw.positions.mean(axis=0)).max() > 1e-3  # it did relax


def test_malondialdehyde_keeps_its_hydrogen_bond():
    m = molecule_geometry("malondialdehyde")
    o = np.flatnonzero(m.numbers == 8)
    assert 2.3 < np.linalg.norm(m.positions[o[0]] - m.positions[o[1]]) < 2.8
    assert np.abs(m.positions[:, 2]).max() < 0.05  # stays planar (Cs)


def test_ase_molecules_come_through_unrelaxed_and_unknown_names_fail():
    from ase.build import molecule

    assert np.array_equal(molecule_geometry("H2O").positions, molecule("H2O").positions)
    with pytest.raises(ZooError, match="unknown molecule 'unobtainium'"):
        molecule_geometry("unobtainium")
