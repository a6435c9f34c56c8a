"""Augmented partitioner: ownership, halos, the seed's Algorithm 1, balanced cuts, stats, bad input, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from zoo.cli.main import main
from zoo.data.format import DatasetWriter, Structure
from zoo.data.partition import assign_owner, check_graph, partition, partition_stats, scatter_predictions
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import collate, edge_vectors, record_to_data, structure_to_data
from zoo.errors import ConfigError, GraphError
from zoo.physics.basis import OrbitalLayout, get_basis

BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [14, 32])
CUTOFF = 2.6


def _si_chain(rep=(8, 1, 1), seed=7):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(rep)
    atoms.rattle(0.05, seed=seed)
    z = atoms.numbers.copy()
    z[::5] = 32
    atoms.numbers = z
    return atoms


@pytest.fixture(scope="module")
def data():
    rec = toy_record(Structure.from_ase(_si_chain()), BASIS, CUTOFF)
    return record_to_data(rec, LAYOUT, torch.float64)


def _ids(parts, data):
    """Scatter each partition's own node / edge ids: exact-once coverage means arange back."""
    preds = [(p.orig_node.double(), p.orig_edge.double()) for p in parts]
    return scatter_predictions(parts, preds, data)


KINDS = [("slices", {"n_slices": 4}), ("slices", {"t_slice": 7.0}), ("rcb", {"n_parts": 3}), ("metis", {"n_parts": 4})]


@pytest.mark.parametrize("kind,kw", KINDS)
@pytest.mark.parametrize("hops", [0, 1, 2])
@pytest.mark.parametrize("virtual", ["one-way", "two-way"])
def test_every_block_labelled_exactly_once(kind, kw, hops, virtual, data):
    if kind == "metis":
        pytest.importorskip("pymetis")
    parts = partition(data, kind, hops=hops, virtual=virtual, **kw)
    node, edge = _ids(parts, data)  # strict: raises unless each block is labelled once
    assert torch.equal(node.long(), torch.arange(data.num_nodes))
    assert torch.equal(edge.long(), torch.arange(data.edge_index.shape[1]))
    full_vec = edge_vectors(data)
    for p in parts:
        # geometry and targets are the full graph's, in the original cell coordinates
        assert torch.allclose(edge_vectors(p), full_vec[p.orig_edge], atol=1e-12)
        assert torch.equal(p.y_edge, data.y_edge[p.orig_edge])
        assert torch.equal(p.y_node, data.y_node[p.orig_node])
        assert torch.equal(p.z, data.z[p.orig_node])
        # virtual nodes are exactly the ring > 0 atoms; labelled edges are those from a labelled atom
        assert torch.equal(p.node_label_mask, p.ring == 0)
        assert torch.equal(p.edge_label_mask, p.node_label_mask[p.edge_index[0]])
        assert int(p.ring.max()) <= hops + 1
        n_lab = int(p.node_label_mask.sum())
        assert p.node_label_mask[:n_lab].all() and not p.node_label_mask[n_lab:].any()  # labelled first


def test_seed_algorithm_1(data):
    """hops=0, one-way: the slab's atoms, every outside neighbour as a virtual node, and each
    virtual atom joined to the slab only by its edges into the slab (plus the labelled cross edges)."""
    parts = partition(data, "slices", n_slices=4, hops=0, virtual="one-way")
    ei = data.edge_index.numpy()
    for p in parts:
        slab = set(p.orig_node[p.node_label_mask].tolist())
        neigh = {j for i, j in ei.T if i in slab} | {i for i, j in ei.T if j in slab}
        assert set(p.orig_node.tolist()) == slab | neigh
        want = {e for e, (i, j) in enumerate(ei.T) if i in slab or j in slab}
        assert set(p.orig_edge.tolist()) == want
        virt = set(p.orig_node[~p.node_label_mask].tolist())
        assert not any(i in virt and j in virt for i, j in ei[:, p.orig_edge.numpy()].T)  # no virtual-virtual edge


def test_raw_partitions_and_directions(data):
    raw = partition(data, "slices", n_slices=4, virtual="none")
    for p in raw:
        assert bool(p.node_label_mask.all()) and bool(p.edge_label_mask.all())
    assert sum(int(p.edge_index.shape[1]) for p in raw) < data.edge_index.shape[1]  # cross edges dropped
    one = partition(data, "slices", n_slices=4, hops=1, virtual="one-way")
    two = partition(data, "slices", n_slices=4, hops=1, virtual="two-way")
    for a, b in zip(one, two):
        assert torch.equal(a.orig_node, b.orig_node)
        assert set(a.orig_edge.tolist()) < set(b.orig_edge.tolist())
        # one-way (source_to_target): nothing flows into the outermost ring
        assert not bool((a.ring[a.edge_index[1]] == 2).any())
        assert bool((b.ring[b.edge_index[1]] == 2).any())
    rev = partition(data, "slices", n_slices=4, hops=1, flow="target_to_source")
    assert not any(bool((p.ring[p.edge_index[0]] == 2).any()) for p in rev)


def test_slices_follow_seed_parameters(data):
    # a-HfO2 style config: start, thickness, number of slices (length = 14 x 3 A), along x
    owner = assign_owner(data, "slices", t_slice=3.0, n_slices=14, start=1.0, axis="x")
    x = np.mod(np.linalg.solve(data.cell[0].numpy().T, data.pos.numpy().T).T[:, 0], 1) * 43.44
    want = np.where((x >= 1.0) & (x < 43.0), (x - 1.0) // 3.0, -1).astype(int)
    assert np.array_equal(owner, want)
    with pytest.raises(GraphError, match="slice 15 .* holds no atom"):  # 18 x 3 A overruns the 43.4 A cell
        assign_owner(data, "slices", t_slice=3.0, n_slices=18, start=-1.0, axis="x")
    # default axis is the longest one (x for an 8x1x1 supercell) and slabs cover everything
    owner = assign_owner(data, "slices", t_slice=5.0)
    assert owner.min() == 0 and owner.max() == 8
    assert np.all(np.diff(owner[np.argsort(x)]) >= 0)
    # a range that covers part of the structure leaves atoms unlabelled, as the seed's training slices do
    parts = partition(data, "slices", n_slices=2, start=0.0, length=20.0)
    lab = sum(int(p.node_label_mask.sum()) for p in parts)
    assert 0 < lab < data.num_nodes
    with pytest.raises(GraphError, match="unlabelled"):
        _ids(parts, data)


def test_balanced_partitioners_beat_slabs_on_uneven_density():
    # dense crystal on one side, sparse on the other: equal-thickness slabs are unbalanced
    atoms = _si_chain((6, 1, 1), seed=3)
    keep = (atoms.positions[:, 0] < 16.0) | (np.arange(len(atoms)) % 3 == 0)
    atoms = atoms[keep]
    d = structure_to_data(Structure.from_ase(atoms), LAYOUT, CUTOFF, torch.float64)
    slabs = partition_stats(partition(d, "slices", n_slices=4))["summary"]["imbalance"]
    rcb = partition_stats(partition(d, "rcb", n_parts=4))["summary"]["imbalance"]
    assert rcb < slabs
    assert rcb < 1.35
    for n in (1, 3, 5):
        owner = assign_owner(d, "rcb", n_parts=n)
        assert sorted(set(owner.tolist())) == list(range(n))


def test_metis(data):
    pytest.importorskip("pymetis")
    owner = assign_owner(data, "metis", n_parts=4)
    assert sorted(set(owner.tolist())) == [0, 1, 2, 3]
    assert np.array_equal(owner, assign_owner(data, "metis", n_parts=4))  # seeded: deterministic
    s = partition_stats(partition(data, "metis", n_parts=4), data.num_nodes, data.edge_index.shape[1])["summary"]
    assert s["imbalance"] < 1.3


def test_stats(data):
    parts = partition(data, "slices", n_slices=4, hops=1)
    st = partition_stats(parts, data.num_nodes, data.edge_index.shape[1])
    rows, s = st["rows"], st["summary"]
    assert [r["part"] for r in rows] == [0, 1, 2, 3]
    assert sum(r["labelled_nodes"] for r in rows) == data.num_nodes
    assert sum(r["labelled_edges"] for r in rows) == data.edge_index.shape[1]
    assert all(r["virtual_nodes"] > 0 and r["virtual_edges"] > 0 for r in rows)
    edges = [r["edges"] for r in rows]
    assert s["imbalance"] == pytest.approx(max(edges) / np.mean(edges))
    assert s["edge_overhead"] == pytest.approx(sum(edges) / data.edge_index.shape[1])
    assert s["node_overhead"] > 1 and s["labelled_edge_coverage"] == 1.0
    single = partition_stats(partition(data, "slices", n_slices=1, hops=2), data.num_nodes, data.edge_index.shape[1])
    assert single["summary"]["edge_overhead"] == 1.0 and single["summary"]["imbalance"] == 1.0


def test_partitions_batch(data):
    parts = partition(data, "slices", n_slices=3, hops=1)
    b = collate(parts)
    assert b.num_graphs == 3
    assert torch.equal(b.orig_node, torch.cat([p.orig_node for p in parts]))  # not shifted by batching
    assert int(b.node_label_mask.sum()) == data.num_nodes


# -- bad input ------------------------------------------------------------------------------

def test_t_slice_larger_than_cell(data):
    with pytest.raises(GraphError, match="larger than the structure"):
        partition(data, "slices", t_slice=50.0)


def test_empty_slice():
    atoms = _si_chain((6, 1, 1))
    x = atoms.positions[:, 0]
    atoms = atoms[(x < 8.0) | (x > 25.0)]  # a vacuum gap inside the periodic 32.6 A cell
    d = structure_to_data(Structure.from_ase(atoms), LAYOUT, CUTOFF, torch.float64)
    with pytest.raises(GraphError, match=r"slice 1 \(\[8.145, 16.290\) A along x\) holds no atom"):
        partition(d, "slices", n_slices=4)


def test_cutoff_longer_than_half_cell():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    d = structure_to_data(Structure.from_ase(atoms), LAYOUT, 4.0, torch.float64)  # 2 x 4 A > 5.43 A
    with pytest.raises(GraphError, match="half the cell"):
        partition(d, "slices", n_slices=2)
    # explicit-image data may mean it: opting in partitions it, still labelling every block once
    parts = partition(d, "slices", n_slices=2, hops=1, allow_self_images=True)
    node, edge = _ids(parts, d)
    assert torch.equal(edge.long(), torch.arange(d.edge_index.shape[1]))
    ok = structure_to_data(Structure.from_ase(_si_chain((2, 2, 2))), LAYOUT, CUTOFF, torch.float64)
    check_graph(ok, cutoff=CUTOFF)
    with pytest.raises(GraphError, match="longer than half the cell"):
        check_graph(ok, cutoff=6.0)


def test_bad_options(data):
    with pytest.raises(ConfigError, match="unknown partitioner"):
        partition(data, "kmeans", n_parts=2)
    with pytest.raises(GraphError, match="virtual"):
        partition(data, "slices", n_slices=2, virtual="three-way")
    with pytest.raises(GraphError, match="hops"):
        partition(data, "slices", n_slices=2, hops=-1)
    with pytest.raises(ConfigError, match="n_parts"):
        partition(data, "rcb")
    with pytest.raises(GraphError, match="parts"):
        partition(data, "rcb", n_parts=1000)


def test_molecule_without_cell():
    atoms = Atoms("Si4", positions=[[0, 0, 0], [2.3, 0, 0], [4.6, 0, 0], [6.9, 0, 0]])
    d = structure_to_data(Structure.from_ase(atoms), LAYOUT, CUTOFF, torch.float64)
    parts = partition(d, "slices", n_slices=2, hops=0)
    assert [int(p.node_label_mask.sum()) for p in parts] == [2, 2]
    assert [int(p.num_nodes) for p in parts] == [3, 3]


# -- CLI ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "chain"
    with DatasetWriter(path, "chain", BASIS, CUTOFF, {"method": "synthetic"}) as w:
        for k in range(2):
            w.add(toy_record(Structure.from_ase(_si_chain(seed=k)), BASIS, CUTOFF, name=f"s{k}"))
        w.finalize({"train": ["s0"], "val": ["s1"], "test": ["s1"]})
    return path


def test_cli_partition_info(dataset, capsys):
    assert main(["data", "partition-info", str(dataset), "--partitioner", "slices", "--t-slice", "11"]) == 0
    out = capsys.readouterr().out
    assert "s0: 64 atoms" in out and "labelled_nodes" in out and "imbalance" in out
    assert main(["data", "partition-info", str(dataset), "--split", "val", "--partitioner", "rcb", "--n-parts", "3",
                 "--hops", "1", "--virtual", "two-way", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res[0]["structure"] == "s1" and res[0]["summary"]["parts"] == 3
    assert res[0]["summary"]["labelled_edge_coverage"] == 1.0
    assert main(["data", "partition-info", str(dataset), "--partitioner", "slices", "--t-slice", "99"]) == 1
    assert "larger than the structure" in capsys.readouterr().err
    assert main(["data", "partition-info", str(dataset), "--partitioner", "metis"]) == 1
