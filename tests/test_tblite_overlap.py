"""Per-image GFN1-xTB overlap blocks (zoo.data.engines.tblite.overlap_images) against tblite's own
Gamma-point overlap: the sum over images must equal it (benchmarks/tblite_overlap_cutoff.py)."""

import numpy as np
import pytest

pytest.importorskip("tblite")

from zoo.data.engines import get_engine  # noqa: E402
from zoo.data.engines.base import orbital_reorder, to_internal  # noqa: E402
from zoo.data.engines.tblite import overlap_images  # noqa: E402
from zoo.data.format import Structure  # noqa: E402
from zoo.data.graph import reverse_edge_index  # noqa: E402
from zoo.physics.assembly import assemble  # noqa: E402


def test_overlap_images_sum_to_tblite_gamma_overlap():
    from ase.build import bulk

    atoms = bulk("Si", "diamond", 5.43)
    atoms.set_cell(atoms.cell * [1.0, 1.03, 0.98], scale_atoms=True)
    atoms.positions[1] += [0.05, -0.03, 0.02]
    st = Structure.from_ase(atoms)
    eng = get_engine("tblite")
    perm, sign = orbital_reorder(st.numbers, eng.basis(), eng.convention)
    s_gamma = to_internal(eng.compute(st).s, perm, sign)
    ei, sh, s_on, s_off = overlap_images(st, 25.0)  # GFN1 Si overlap is exactly zero beyond ~20 A
    norb = eng.basis().norb_per_atom(st.numbers)
    assert np.abs(assemble(norb, s_on, ei, sh, s_off).toarray() - s_gamma).max() < 1e-10
    rev = reverse_edge_index(ei, sh)
    assert (rev >= 0).all()
    blocks = s_off.reshape(len(ei), 9, 9)  # Si: s, p, d
    assert np.abs(blocks - blocks[rev].transpose(0, 2, 1)).max() == 0.0  # S_ji(-R) = S_ij(R)^T
