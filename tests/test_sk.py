"""Slater-Koster backbone specifics: bond-frame structure, reciprocity, symmetry, presets."""

import pytest
import torch
from torch_geometric.data import Data

from zoo.data.torch_data import DatasetInfo
from zoo.models.contract import reverse_edges
from zoo.models.registry import build_model, list_models, load_preset
from zoo.physics.basis import BasisSet, OrbitalLayout
from zoo.physics.wigner import random_rotation, wigner_D_shells

BASIS = BasisSet("t", {8: (0, 1), 72: (0, 0, 1, 2)})
LAYOUT = OrbitalLayout(BASIS, [8, 72])
INFO = DatasetInfo(LAYOUT, 3.5)


def _cluster(pos, z):
    pos = torch.as_tensor(pos, dtype=torch.float64)
    n = len(z)
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b and (pos[a] - pos[b]).norm() < INFO.cutoff]
    ei = torch.tensor(pairs).T
    return Data(z=torch.tensor(z), pos=pos, cell=torch.zeros(1, 3, 3, dtype=torch.float64), edge_index=ei,
                edge_shift=torch.zeros(ei.shape[1], 3, dtype=torch.float64),
                node_orb_mask=torch.as_tensor(LAYOUT.mask_table()[z]), num_nodes=n)


def _model(**kw):
    torch.manual_seed(0)
    m = build_model("sk", INFO, init_scale=0.3, **kw).double()
    with torch.no_grad():
        m.onsite.normal_()
    return m


CLUSTER = _cluster([[0, 0, 0], [1.9, 0.4, -0.3], [-0.6, 1.8, 0.7], [0.4, -0.9, 1.6]], [72, 8, 8, 72])


def test_registered_with_presets():
    assert "sk" in list_models()
    for preset in ("cpu", "paper"):
        p = load_preset("sk", preset)
        assert {"lr", "max_epochs", "loss"} <= set(p["train"])


@pytest.mark.parametrize("improper", [False, True])
def test_rotation_and_parity_equivariance(improper):
    m = _model()
    p = m(CLUSTER)
    R = random_rotation(7, improper=improper)
    rot = CLUSTER.clone()
    rot.pos = CLUSTER.pos @ R.T
    q = m(rot)
    D = wigner_D_shells(LAYOUT.slot_ls, R)
    assert p.edge_blocks.abs().max() > 1e-2
    assert torch.allclose(D @ p.edge_blocks @ D.T, q.edge_blocks, atol=1e-5)
    assert torch.allclose(D @ p.node_blocks @ D.T, q.node_blocks, atol=1e-5)


def test_hermitian_and_sk_reciprocity():
    m = _model()
    p = m(CLUSTER)
    rev = reverse_edges(CLUSTER.edge_index, CLUSTER.edge_shift, CLUSTER.num_nodes)
    assert (rev >= 0).all()
    assert torch.allclose(p.edge_blocks[rev], p.edge_blocks.transpose(1, 2), atol=1e-6)
    assert torch.allclose(p.node_blocks, p.node_blocks.transpose(1, 2), atol=1e-12)


def test_bond_along_z_is_diagonal_in_m():
    m = _model(crystal_field=False)
    d = _cluster([[0, 0, 0], [0, 0, 2.1]], [72, 8])
    e = m(d).edge_blocks[0].detach()  # Hf -> O along +z; padded slots s, s, p, d
    lay = LAYOUT
    for a, la in enumerate(lay.slot_ls):
        for b, lb in enumerate(lay.slot_ls):
            blk = e[lay.slot_offsets[a]:lay.slot_offsets[a] + 2 * la + 1, lay.slot_offsets[b]:lay.slot_offsets[b] + 2 * lb + 1]
            for i in range(2 * la + 1):
                for j in range(2 * lb + 1):
                    mi, mj = i - la, j - lb
                    if mi != mj:
                        assert abs(blk[i, j]) < 1e-6
            if la == lb == 1:  # pi bonds: m = -1 and m = +1 carry the same V_pp_pi
                assert blk[0, 0] == pytest.approx(blk[2, 2].item(), abs=1e-6)
    # pd sigma from O's side is (-1)^(1+2) times the Hf side's dp sigma: checked through reversal
    rev = m(_cluster([[0, 0, 2.1], [0, 0, 0]], [8, 72])).edge_blocks[0].detach()
    assert torch.allclose(rev, m(d).edge_blocks[1].detach(), atol=1e-6)


def test_crystal_field_switch():
    far = _cluster([[0, 0, 0], [3.0, 0, 0]], [72, 8])
    near = _cluster([[0, 0, 0], [2.0, 0, 0]], [72, 8])
    m0 = _model(crystal_field=False)
    assert m0.message_passing_layers == 0
    assert torch.allclose(m0(far).node_blocks, m0(near).node_blocks)
    m1 = _model(crystal_field=True)
    assert m1.message_passing_layers == 1
    assert not torch.allclose(m1(far).node_blocks, m1(near).node_blocks)


def test_smooth_cutoff():
    m = _model(crystal_field=False)
    at_cut = m(_cluster([[0, 0, 0], [0, 0, INFO.cutoff - 1e-4]], [72, 8])).edge_blocks
    assert at_cut.abs().max() < 1e-5


def test_fits_a_two_centre_hamiltonian():
    """A few hundred Adam steps bring the SK model well below the loss of predicting zeros."""
    from zoo.bench.losses import LossSpec, loss_value

    target = _model(crystal_field=False)
    d = CLUSTER.clone()
    with torch.no_grad():
        t = target(d)
    d.y_node, d.y_edge = t.node_blocks, t.edge_blocks
    d.node_label_mask = torch.ones(d.num_nodes, dtype=torch.bool)
    d.edge_label_mask = torch.ones(d.edge_index.shape[1], dtype=torch.bool)
    torch.manual_seed(1)
    m = build_model("sk", INFO, crystal_field=False).double()
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    spec = LossSpec("mse")
    zero = float((t.edge_blocks[d.edge_label_mask] ** 2).mean())
    for _ in range(300):
        opt.zero_grad()
        loss = loss_value(spec, m(d), d)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * zero


def test_partitioned_predictions_equal_full_graph():
    """With the halo the backbone declares (1 hop, row-1 -> row-0 flow), labelled outputs are exact."""
    from ase.build import bulk

    from zoo.data.format import Structure
    from zoo.data.partition import partition_for_model, scatter_predictions
    from zoo.data.synthetic import toy_record
    from zoo.data.torch_data import record_to_data
    from zoo.physics.basis import get_basis

    at = bulk("MgO", "rocksalt", a=4.4, cubic=True).repeat((2, 2, 2))
    at.numbers[at.numbers == 12] = 72
    at.rattle(0.1, seed=3)
    basis = get_basis("szv-molopt-sr").subset([8, 72])
    rec = toy_record(Structure.from_ase(at), basis, 3.3, overlap=False)
    info = DatasetInfo(OrbitalLayout(basis, [8, 72]), 3.3)
    torch.manual_seed(0)
    m = build_model("sk", info, init_scale=0.3).double()
    full = record_to_data(rec, info.layout, torch.float64)
    parts = partition_for_model(full, m, "slices", t_slice=3.0)
    assert len(parts) == 3 and any((~p.node_label_mask).any() for p in parts)
    node, edge = scatter_predictions(parts, [m(p) for p in parts], full)
    ref = m(full)
    assert torch.allclose(node, ref.node_blocks, atol=1e-10)
    assert torch.allclose(edge, ref.edge_blocks, atol=1e-10)
