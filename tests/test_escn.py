"""The escn backbone: symmetries, locality, partition exactness, presets. Tiny graphs, float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from tests.conftest import tiny_hfo2
from zoo.data.format import Structure
from zoo.data.partition import partition, partition_for_model, scatter_predictions
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import DatasetInfo, record_to_data, structure_to_data
from zoo.errors import ConfigError
from zoo.models.contract import reverse_edges, symmetrize_prediction
from zoo.models.escn import ESCN
from zoo.models.escn.rotation import EdgeRotation
from zoo.models.registry import build_model, list_models, load_preset
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.wigner import random_rotation, spherical_harmonics, wigner_D_shells

CUT = 3.5
SMALL = dict(sphere_channels=4, attn_hidden_channels=4, attn_alpha_channels=4, attn_value_channels=2,
             ffn_hidden_channels=8, edge_channels=8, num_rbf=8, mmax=2)
BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [8, 72])


def _data(atoms: Atoms, cutoff: float = CUT):
    rec = toy_record(Structure.from_ase(atoms), BASIS, cutoff)
    return record_to_data(rec, LAYOUT, dtype=torch.float64)


def _model(cutoff: float = CUT, seed: int = 0, **kw) -> ESCN:
    torch.manual_seed(seed)
    return build_model("escn", DatasetInfo(LAYOUT, cutoff), **{**SMALL, **kw}).double().eval()


def _transformed(data, R: torch.Tensor):
    d = data.clone()
    d.pos = data.pos @ R.T
    d.cell = data.cell @ R.T
    return d


@pytest.fixture(scope="module")
def hfo2():
    return _data(tiny_hfo2(0, (1, 1, 1)))


def _pseudo_mask(model: ESCN) -> torch.Tensor:
    return torch.tensor([ir.p != (-1) ** ir.l for _, ir in model.we.irreps for _ in range(ir.dim)])


def test_registered_and_presets_load():
    assert "escn" in list_models()
    for name in ("cpu", "paper", "paper-md17"):
        p = load_preset("escn", name)
        assert set(p["train"]) >= {"lr", "min_lr", "lr_decay", "patience", "dtype"}
    assert load_preset("escn", "paper")["sphere_channels"] == 16
    assert load_preset("escn", "paper-md17")["num_layers"] == 2
    m = build_model("escn", DatasetInfo(LAYOUT, CUT), preset="cpu")
    assert m.message_passing_layers == 1 and m.lmax == 4


def test_bad_hyperparameters_are_config_errors():
    info = DatasetInfo(LAYOUT, CUT)
    with pytest.raises(ConfigError, match="lmax=3 is too small"):
        ESCN(info, lmax=3)
    with pytest.raises(ConfigError, match="mmax"):
        ESCN(info, mmax=5)
    with pytest.raises(ConfigError, match="parity"):
        ESCN(info, parity="so2")
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        build_model("escn", info, sphere_channel=8)


def test_edge_rotation_aligns_edges_with_z():
    rot = EdgeRotation(4)
    u = torch.nn.functional.normalize(torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), dim=1)
    u = torch.cat([u, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=torch.float64)])
    zhat = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    for l, D in enumerate(rot(u)):
        eye = torch.eye(2 * l + 1, dtype=torch.float64)
        assert torch.allclose(D @ D.transpose(1, 2), eye.expand_as(D), atol=1e-12)
        # D^T Y_l(u) = Y_l(z): the edge lies on the polar axis of the local frame
        local = torch.einsum("eij,ei->ej", D, spherical_harmonics(l, u))
        assert torch.allclose(local, spherical_harmonics(l, zhat).expand_as(local), atol=1e-12)


def test_output_shapes_and_dtype(hfo2):
    m = _model()
    p = m(hfo2)
    n = LAYOUT.n_max
    assert p.node_blocks.shape == (hfo2.num_nodes, n, n) and p.edge_blocks.shape == (hfo2.edge_index.shape[1], n, n)
    assert p.node_blocks.dtype == torch.float64 and torch.isfinite(p.edge_blocks).all()
    m32 = _model().float()
    d32 = hfo2.clone()
    d32.pos, d32.cell, d32.edge_shift = hfo2.pos.float(), hfo2.cell.float(), hfo2.edge_shift.float()
    p32 = m32(d32)
    assert p32.edge_blocks.dtype == torch.float32
    assert torch.allclose(p32.edge_blocks.double(), p.edge_blocks, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
def test_rotation_equivariance(hfo2, layers):
    m = _model(num_layers=layers)
    R = random_rotation(7)
    D = wigner_D_shells(LAYOUT.slot_ls, R)
    p, q = m(hfo2), m(_transformed(hfo2, R))
    assert torch.allclose(D @ p.node_blocks @ D.T, q.node_blocks, atol=1e-10)
    assert torch.allclose(D @ p.edge_blocks @ D.T, q.edge_blocks, atol=1e-10)
    assert p.edge_blocks.abs().max() > 1e-4  # not trivially zero


@pytest.mark.parametrize("layers", [1, 2])
def test_inversion_parity_with_pseudotensors(hfo2, layers):
    m = _model(num_layers=layers)
    R = -random_rotation(3)  # improper
    D = wigner_D_shells(LAYOUT.slot_ls, R)
    p, q = m(hfo2), m(_transformed(hfo2, R))
    assert torch.allclose(D @ p.node_blocks @ D.T, q.node_blocks, atol=1e-10)
    assert torch.allclose(D @ p.edge_blocks @ D.T, q.edge_blocks, atol=1e-10)
    # the odd-parity-for-even-L (pseudo-tensor) irreps are produced, not just zeroed out
    pseudo = _pseudo_mask(m)
    ce, cn = m.we.to_coupled(p.edge_blocks), m.we.to_coupled(p.node_blocks)
    assert ce[:, pseudo].abs().max() > 0.05 * ce[:, ~pseudo].abs().max()
    if layers == 2:
        assert cn[:, pseudo].abs().max() > 0.01 * cn[:, ~pseudo].abs().max()


def test_so3_mode_is_rotation_but_not_inversion_equivariant(hfo2):
    m = _model(parity="so3")
    R = random_rotation(5)
    D = wigner_D_shells(LAYOUT.slot_ls, R)
    p = m(hfo2)
    assert torch.allclose(D @ p.edge_blocks @ D.T, m(_transformed(hfo2, R)).edge_blocks, atol=1e-10)
    Di = wigner_D_shells(LAYOUT.slot_ls, -R)
    assert (Di @ p.edge_blocks @ Di.T - m(_transformed(hfo2, -R)).edge_blocks).abs().max() > 1e-3 * p.edge_blocks.abs().max()


def test_atom_permutation(hfo2):
    m = _model(num_layers=2)
    n, e = hfo2.num_nodes, hfo2.edge_index.shape[1]
    g = torch.Generator().manual_seed(0)
    perm, eperm = torch.randperm(n, generator=g), torch.randperm(e, generator=g)
    inv = torch.argsort(perm)  # new index of old atom a is inv[a]
    d = hfo2.clone()
    d.z, d.pos, d.node_orb_mask = hfo2.z[perm], hfo2.pos[perm], hfo2.node_orb_mask[perm]
    d.edge_index = inv[hfo2.edge_index[:, eperm]]
    d.edge_shift = hfo2.edge_shift[eperm]
    p, q = m(hfo2), m(d)
    assert torch.allclose(p.node_blocks[perm], q.node_blocks, atol=1e-11)
    assert torch.allclose(p.edge_blocks[eperm], q.edge_blocks, atol=1e-11)


def test_hermitian_after_symmetrize(hfo2):
    m = _model()
    raw = m(hfo2)
    rev = reverse_edges(hfo2.edge_index, hfo2.edge_shift, hfo2.num_nodes)
    assert (rev >= 0).all()
    assert (raw.edge_blocks - raw.edge_blocks[rev].transpose(1, 2)).abs().max() > 1e-6
    s = symmetrize_prediction(raw, hfo2)
    assert torch.allclose(s.node_blocks, s.node_blocks.transpose(1, 2))
    assert torch.allclose(s.edge_blocks, s.edge_blocks[rev].transpose(1, 2), atol=1e-12)


def test_translation_by_lattice_vector(hfo2):
    """Moving atom a by a lattice vector (with the image shifts that keep every edge vector) changes nothing."""
    m = _model(num_layers=2)
    a = 3
    d = hfo2.clone()
    d.pos = hfo2.pos.clone()
    d.pos[a] += hfo2.cell[0, 1]
    i, j = hfo2.edge_index
    shift = hfo2.edge_shift.clone()
    shift[:, 1] -= (j == a).double()
    shift[:, 1] += (i == a).double()
    d.edge_shift = shift
    p, q = m(hfo2), m(d)
    assert torch.allclose(p.node_blocks, q.node_blocks, atol=1e-11)
    assert torch.allclose(p.edge_blocks, q.edge_blocks, atol=1e-11)


def test_supercell_gives_same_blocks():
    atoms = tiny_hfo2(1, (1, 1, 1))
    m = _model(num_layers=1)
    small = structure_to_data(Structure.from_ase(atoms), LAYOUT, CUT, dtype=torch.float64)
    big = structure_to_data(Structure.from_ase(atoms.repeat((2, 1, 1))), LAYOUT, CUT, dtype=torch.float64)
    p, q = m(small), m(big)
    n = len(atoms)
    assert torch.allclose(q.node_blocks[:n], p.node_blocks, atol=1e-10)
    assert torch.allclose(q.node_blocks[n:], p.node_blocks, atol=1e-10)
    # edges: match by (i mod n, j mod n, edge vector)
    def keyed(data, blocks):
        vec = data.pos[data.edge_index[1]] - data.pos[data.edge_index[0]] + data.edge_shift @ data.cell[0]
        keys = [(int(a) % n, int(b) % n, *np.round(v.numpy(), 6)) for a, b, v in zip(*data.edge_index, vec)]
        return dict(zip(keys, blocks))
    ks, kb = keyed(small, p.edge_blocks), keyed(big, q.edge_blocks)
    assert set(ks) == set(kb)
    assert max((ks[k] - kb[k]).abs().max().item() for k in ks) < 1e-10


def _chain(n: int = 14, spacing: float = 2.0, seed: int = 0) -> Atoms:
    """A zig-zag HfO chain (non-periodic) along x: hop distance grows with x."""
    rng = np.random.default_rng(seed)
    pos = np.array([[k * spacing, 0.6 * (k % 2), 0.0] for k in range(n)]) + rng.normal(0, 0.05, (n, 3))
    return Atoms(["Hf", "O"] * (n // 2), positions=pos, pbc=False)


@pytest.mark.parametrize("layers", [1, 2])
def test_k_layer_locality(layers):
    """Node 0 depends only on atoms within `layers` hops (< layers * cutoff away)."""
    cut = 2.5
    atoms = _chain()
    m = _model(cutoff=cut, num_layers=layers)
    base = m(structure_to_data(Structure.from_ase(atoms), LAYOUT, cut, dtype=torch.float64)).node_blocks[0]
    far = np.linalg.norm(atoms.positions - atoms.positions[0], axis=1) > layers * cut + 0.5
    moved = atoms.copy()
    moved.positions[far] += np.random.default_rng(1).normal(0, 0.2, (int(far.sum()), 3))
    out = m(structure_to_data(Structure.from_ase(moved), LAYOUT, cut, dtype=torch.float64)).node_blocks[0]
    assert torch.allclose(base, out, atol=1e-12)
    # and it does see the atoms `layers` hops away
    hop = (np.linalg.norm(atoms.positions - atoms.positions[0], axis=1) > (layers - 1) * cut + 0.5) & ~far
    near = atoms.copy()
    near.positions[hop] += 0.1
    out = m(structure_to_data(Structure.from_ase(near), LAYOUT, cut, dtype=torch.float64)).node_blocks[0]
    assert (base - out).abs().max() > 1e-8


@pytest.mark.parametrize("layers", [1, 2])
def test_partitioned_equals_full(layers):
    cut = 2.5  # below half the 5.1 A cell width, as the partitioner requires
    data = _data(tiny_hfo2(2, (4, 1, 1)), cut)
    m = _model(cutoff=cut, num_layers=layers)
    full = m(data)
    parts = partition_for_model(data, m, "slices", n_parts=3)
    node, edge = scatter_predictions(parts, [m(p) for p in parts], data)
    assert torch.allclose(node, full.node_blocks, atol=1e-11)
    assert torch.allclose(edge, full.edge_blocks, atol=1e-11)


def test_gradients_reach_every_parameter(hfo2):
    m = _model(num_layers=2)
    m.train()
    p = m(hfo2)
    loss = (p.node_blocks - hfo2.y_node).pow(2).mean() + (p.edge_blocks - hfo2.y_edge).pow(2).mean()
    loss.backward()
    missing = [n for n, q in m.named_parameters() if q.grad is None or not torch.isfinite(q.grad).all()]
    assert not missing, missing


def test_one_hop_halo_is_not_enough_for_two_layers():
    """The seed's failure mode (Table 3/7): a 2-layer model on partitions with a 1-layer halo."""
    cut = 2.5
    data = _data(tiny_hfo2(2, (4, 1, 1)), cut)
    m = _model(cutoff=cut, num_layers=2)
    full = m(data)
    parts = partition(data, "slices", hops=1, n_parts=3, flow=m.message_flow)
    node, edge = scatter_predictions(parts, [m(p) for p in parts], data)
    assert (edge - full.edge_blocks).abs().max() > 1e-8
