"""Neighbour graphs and torch Data conversion."""

import numpy as np
import pytest
import torch
from ase import Atoms

from tests.conftest import tiny_hfo2
from zoo.data.format import Structure
from zoo.data.graph import check_cell_for_cutoff, edge_vectors_np, neighbor_graph
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import block_masks, collate, edge_vectors, record_to_data, structure_to_data
from zoo.errors import GraphError
from zoo.physics.basis import OrbitalLayout, get_basis


def brute_force_pairs(atoms, cutoff):
    out = set()
    for i in range(len(atoms)):
        for j in range(len(atoms)):
            for s in np.ndindex(5, 5, 5):
                s = np.array(s) - 2
                if i == j and not s.any():
                    continue
                d = atoms.positions[j] + s @ atoms.cell[:] - atoms.positions[i]
                if np.linalg.norm(d) < cutoff:
                    out.add((i, j, *s))
    return out


def test_neighbour_graph_matches_brute_force_with_images():
    atoms = Atoms("SiSi", positions=[[0, 0, 0], [1.3, 1.4, 1.2]], cell=[[3, 0, 0], [0.5, 3.2, 0], [0, 0, 2.9]], pbc=True)
    ei, sh = neighbor_graph(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc, 4.0)
    got = {(int(i), int(j), *map(int, s)) for (i, j), s in zip(ei, sh)}
    assert got == brute_force_pairs(atoms, 4.0)
    # self images of an atom in a small cell are edges (i, i, R != 0)
    assert any(i == j for i, j, *_ in got)


def test_cell_too_small_error():
    with pytest.raises(GraphError, match=r"cell too small for cutoff 3.0 A.*a: 5.000 A"):
        check_cell_for_cutoff(np.diag([5.0, 8, 8]), [True, True, True], 3.0, path="x.h5")
    check_cell_for_cutoff(np.diag([5.0, 8, 8]), [False, True, True], 3.0)


def test_record_to_data_and_batching():
    basis = get_basis("szv-molopt-sr")
    layout = OrbitalLayout(basis, [8, 72])
    r = toy_record(Structure.from_ase(tiny_hfo2(0)), basis, 4.0)
    d = record_to_data(r, layout, dtype=torch.float64)
    assert d.y_node.shape == (24, 10, 10) and d.y_edge.shape == (r.n_edges, 10, 10)
    np.testing.assert_allclose(edge_vectors(d).numpy(), edge_vectors_np(r.positions, r.cell, r.edge_index, r.edge_shift))
    nm, em = block_masks(d)
    assert not d.y_node[~nm].any() and not d.y_edge[~em].any()  # padding is zero
    # O (4 orbitals) has 16 real entries per on-site block
    assert int(nm[d.z == 8][0].sum()) == 16
    sd = structure_to_data(r.structure, layout, 4.0)
    assert torch.equal(sd.edge_index, d.edge_index)
    b = collate([d, d])
    assert b.num_graphs == 2 and b.cell.shape == (2, 3, 3)
    ev = edge_vectors(b)
    torch.testing.assert_close(ev[: r.n_edges], ev[r.n_edges:])
    # a smaller cutoff keeps only shorter edges
    d3 = record_to_data(r, layout, cutoff=3.0)
    assert 0 < d3.edge_index.shape[1] < d.edge_index.shape[1]
    assert edge_vectors(d3).norm(dim=1).max() < 3.0
