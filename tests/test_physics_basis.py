import numpy as np
import pytest

from zoo.errors import BasisError
from zoo.physics.basis import BasisSet, OrbitalLayout, get_basis, list_basis_sets, parse_shells


def test_named_sets_match_the_seed():
    szv = get_basis("SZV-MOLOPT-SR")
    assert szv.n_orbitals(72) == 10 and szv.n_orbitals(8) == 4 and szv.n_orbitals(78) == 10
    assert get_basis("dzvp-molopt-sr").n_orbitals(52) == 13
    assert get_basis("def2-svp").n_orbitals(8) == 14 and get_basis("def2-svp").n_orbitals(1) == 5
    assert get_basis("gfn1-xtb").element_shells(72) == (2, 0, 1)
    assert {"szv-molopt-sr", "dzvp-molopt-sr", "def2-svp", "gfn1-xtb"} <= set(list_basis_sets())


def test_layout_slots_and_indices():
    lay = OrbitalLayout(get_basis("gfn1-xtb"), [72, 8])
    assert lay.slot_ls == (0, 1, 2) and lay.n_max == 9
    # Hf lists d, s, p: its orbitals land in the d, s and p slots in that order
    np.testing.assert_array_equal(lay.index[72], [4, 5, 6, 7, 8, 0, 1, 2, 3])
    np.testing.assert_array_equal(lay.index[8], [0, 1, 2, 3])
    assert lay.mask_table()[8].sum() == 4
    lay2 = OrbitalLayout(get_basis("szv-molopt-sr"), [72, 8])
    assert lay2.slot_ls == (0, 0, 1, 2)
    np.testing.assert_array_equal(lay2.index[8], [0, 2, 3, 4])


def test_errors_name_the_fault():
    with pytest.raises(BasisError, match="unknown basis set 'sto-3g'"):
        get_basis("sto-3g")
    with pytest.raises(BasisError, match=r"element U \(Z=92\) is not in basis"):
        get_basis("def2-svp").n_orbitals(92)
    with pytest.raises(BasisError, match="cannot parse"):
        parse_shells("1x2p")


def test_parse_and_json_round_trip():
    assert parse_shells("2s2p1d") == (0, 0, 1, 1, 2)
    b = BasisSet("custom", {14: parse_shells("1s1p")})
    assert BasisSet.from_json(b.to_json()) == b or BasisSet.from_json(b.to_json()).shells == b.shells
