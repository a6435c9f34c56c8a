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
from zoo.data.torch_data import DatasetInfo, edge_vectors, record_to_data, structure_to_data
from zoo.errors import ConfigError, ModelError
from zoo.models.contract import reverse_edges, symmetrize_prediction
from zoo.models.escn import ESCN
from zoo.models.escn.rotation import EdgeRotation
from zoo.models.registry import build_model, list_models, load_preset
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.radial import gaussian
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


# --- the seed's options (issue 18) ------------------------------------------------------------
SEED_OPTIONS = dict(m_share_rad=True, edge_update="seed", attn_activation="smooth_leaky_relu",
                    norm_both_streams=False, rbf_width_scale=2.0, rbf_stop=13.0, head_init_scale=1.0,
                    final_norm=False)
OPTIONS = {
    "m_share_rad": dict(m_share_rad=True),
    "edge_update_seed": dict(edge_update="seed"),
    "smooth_leaky_relu": dict(attn_activation="smooth_leaky_relu"),
    "norm_one_stream": dict(norm_both_streams=False),
    "rbf_seed": dict(rbf_width_scale=2.0, rbf_stop=13.0),
    "use_overlap": dict(use_overlap=True),
    "edge_degree_embedding": dict(edge_degree_embedding=True),
    "head_init_1": dict(head_init_scale=1.0),
    "no_final_norm": dict(final_norm=False),
    "seed_all": SEED_OPTIONS,
    "seed_all_overlap_degree": dict(SEED_OPTIONS, use_overlap=True, edge_degree_embedding=True),
}


def _opt_model(cutoff: float = CUT, seed: int = 0, **kw) -> ESCN:
    torch.manual_seed(seed)
    info = DatasetInfo(LAYOUT, cutoff, has_overlap=True, name="toy")
    return build_model("escn", info, **{**SMALL, **kw}).double().eval()


def _transformed_with_s(data, R: torch.Tensor):
    """Rotate positions and cell, and the overlap blocks with them (S is a model input here)."""
    d = _transformed(data, R)
    D = wigner_D_shells(LAYOUT.slot_ls, R)
    d.s_node, d.s_edge = D @ data.s_node @ D.T, D @ data.s_edge @ D.T
    return d


@pytest.mark.parametrize("name", list(OPTIONS))
def test_options_keep_rotation_and_inversion_equivariance(hfo2, name):
    m = _opt_model(**OPTIONS[name])
    p = m(hfo2)
    # the option is on: the output is not that of the default model of the same seed
    assert (p.edge_blocks - _opt_model()(hfo2).edge_blocks).abs().max() > 1e-6
    for R in (random_rotation(7), -random_rotation(3)):  # proper, improper
        D = wigner_D_shells(LAYOUT.slot_ls, R)
        q = m(_transformed_with_s(hfo2, R))
        assert torch.allclose(D @ p.node_blocks @ D.T, q.node_blocks, atol=1e-10)
        assert torch.allclose(D @ p.edge_blocks @ D.T, q.edge_blocks, atol=1e-10)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_options_keep_partitions_exact(name):
    cut = 2.5
    data = _data(tiny_hfo2(2, (4, 1, 1)), cut)
    m = _opt_model(cutoff=cut, **OPTIONS[name])
    full = m(data)
    parts = partition_for_model(data, m, "slices", n_parts=3)
    node, edge = scatter_predictions(parts, [m(p) for p in parts], data)
    assert torch.allclose(node, full.node_blocks, atol=1e-11)
    assert torch.allclose(edge, full.edge_blocks, atol=1e-11)


def test_edge_degree_embedding_is_one_more_hop():
    """It reads every node's incoming edges before the first layer: the halo needs num_layers + 1 hops."""
    cut = 2.5
    data = _data(tiny_hfo2(2, (4, 1, 1)), cut)
    m = _opt_model(cutoff=cut, edge_degree_embedding=True)
    assert m.message_passing_layers == 2
    full = m(data)
    parts = partition(data, "slices", hops=1, n_parts=3, flow=m.message_flow)
    _, edge = scatter_predictions(parts, [m(p) for p in parts], data)
    assert (edge - full.edge_blocks).abs().max() > 1e-8
    # and it gives the initial nodes l > 0 content: sum_j f_l(r_ij) Y_l(r_ij) is not zero for l = 1..lmax
    x0 = m.degree_embedding(data.num_nodes, m.rotation(edge_vectors(data)),
                            gaussian(edge_vectors(data).norm(dim=1), 0.0, cut, SMALL["num_rbf"]),
                            m.z_index[data.z], data.edge_index)
    for l in range(1, m.lmax + 1):
        assert x0[:, l * l:(l + 1) ** 2, 0].abs().max() > 1e-6
    assert x0[:, :, 1].abs().max() == 0  # nothing in the pseudo-tensor sector


def test_m_share_rad_shares_one_factor_per_l_and_channel():
    """Parameter shapes: the radial MLP ends in (lmax+1) * 3C outputs (one per (l, channel) of the
    concatenated message) instead of sum_m (lmax-m+1) * 3C, and the SO(2) conv takes no radial input."""
    lmax, mmax, c = 4, 2, SMALL["sphere_channels"]
    shared, per_m = _opt_model(m_share_rad=True), _opt_model()
    for m in (shared, per_m):
        assert m.lmax == lmax and m.mmax == mmax
    for block in (shared.layers[0].attn.message, shared.layers[0].edge.message):
        assert block.radial.net[-1].out_features == (lmax + 1) * 3 * c
    for block in (per_m.layers[0].attn.message, per_m.layers[0].edge.message):
        assert block.radial.net[-1].out_features == sum(lmax - m + 1 for m in range(mmax + 1)) * 3 * c
    # and the SO(2) convolution then receives no per-m radial factors
    seen = []
    for model in (shared, per_m):
        conv = model.layers[0].edge.message.conv1
        hook = conv.register_forward_pre_hook(lambda mod, args: seen.append(len(args) > 1 and args[1] is not None))
        model(_data(tiny_hfo2(0, (1, 1, 1))))
        hook.remove()
    assert seen == [False, True]


def test_seed_edge_update_is_one_conv_and_a_projection():
    m = _opt_model(edge_update="seed")
    edge = m.layers[0].edge
    assert edge.message.conv2 is None and edge.proj is not None
    assert edge.proj.weight.shape == (m.lmax + 1, m.sectors, SMALL["sphere_channels"], SMALL["attn_hidden_channels"])
    assert _opt_model().layers[0].edge.proj is None


def test_norm_one_stream_has_no_cross_norms():
    names = {n for n, _ in _opt_model(norm_both_streams=False).named_modules()}
    assert "layers.0.norm_x1" in names and "layers.0.norm_e2" in names
    assert "layers.0.norm_e1" not in names and "layers.0.norm_x3" not in names


def test_smooth_leaky_relu_limits():
    from zoo.models.escn.layers import SmoothLeakyReLU
    f = SmoothLeakyReLU(0.2)
    x = torch.tensor([-50.0, 0.0, 50.0], dtype=torch.float64)
    assert torch.allclose(f(x), torch.tensor([-10.0, 0.0, 50.0], dtype=torch.float64), atol=1e-9)
    x0 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    f(x0).backward()
    assert abs(x0.grad.item() - 0.6) < 1e-12  # (1 + a) / 2


def test_use_overlap_refuses_data_without_s_and_reads_s(hfo2):
    with pytest.raises(ConfigError, match="use_overlap=true needs the overlap matrix S.*has no S"):
        build_model("escn", DatasetInfo(LAYOUT, CUT, name="no-s"), use_overlap=True)
    m = _opt_model(use_overlap=True)
    d = hfo2.clone()
    del d.s_edge
    with pytest.raises(ModelError, match="needs the overlap blocks S"):
        m(d)
    # S is an input: changing one edge's S block changes that edge's output (and its target's node)
    d = hfo2.clone()
    d.s_edge = hfo2.s_edge.clone()
    d.s_edge[0] = d.s_edge[0] * 1.5
    p, q = m(hfo2), m(d)
    assert (p.edge_blocks[0] - q.edge_blocks[0]).abs().max() > 1e-6
    assert (p.node_blocks - q.node_blocks).abs().max() > 1e-8


def test_paper_presets_set_the_seed_choices():
    for preset in ("paper", "paper-md17"):
        p = load_preset("escn", preset)
        for k, v in SEED_OPTIONS.items():
            assert p[k] == v, (preset, k)
        assert p["use_overlap"] is False and p["edge_degree_embedding"] is False
        # the seed's edge_channels_list = [C, C, C]: as many Gaussians and radial channels as sphere channels
        assert p["num_rbf"] == p["edge_channels"] == p["sphere_channels"]
    cpu = load_preset("escn", "cpu")
    assert all(k not in cpu for k in SEED_OPTIONS)  # the cpu preset keeps today's numerics


def test_bad_option_values_are_config_errors():
    info = DatasetInfo(LAYOUT, CUT)
    for kw, msg in [(dict(edge_update="both"), "edge_update"), (dict(attn_activation="relu"), "attn_activation"),
                    (dict(m_share_rad="yes"), "m_share_rad"), (dict(head_init_scale=0), "head_init_scale"),
                    (dict(rbf_stop=-1.0), "rbf_stop")]:
        with pytest.raises(ConfigError, match=msg):
            ESCN(info, **kw)
