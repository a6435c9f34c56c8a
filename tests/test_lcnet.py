"""lcnet: complete local frames (Algorithm 1), the forward/backward output, the local-frame focal loss,
the receptive field. The generic checks (equivariance, permutation, hermiticity, partitions, learning)
run in tests/test_contract.py, test_partition_exactness.py and test_learning.py."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, graphene

from tests.conftest import tiny_hfo2
from zoo.data.format import Structure
from zoo.data.partition import partition, scatter_predictions
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import DatasetInfo, block_masks, collate, record_to_data, structure_to_data
from zoo.models.contract import Prediction, hermiticity_error
from zoo.models.lcnet import LCNet
from zoo.models.lcnet.frames import rotation_to_x
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.units import HARTREE_EV
from zoo.physics.wigner import random_rotation, wigner_D_shells

BASIS = get_basis("szv-molopt-sr")


def _graph(atoms, elements, cutoff, targets=True):
    layout = OrbitalLayout(BASIS, elements)
    s = Structure.from_ase(atoms)
    if targets:
        data = record_to_data(toy_record(s, BASIS, cutoff, overlap=False), layout, torch.float64)
    else:
        data = structure_to_data(s, layout, cutoff, torch.float64)
    return data, DatasetInfo(layout, cutoff)


def _model(info, **kw):
    torch.manual_seed(0)
    m = LCNet(info, **kw).double().eval()
    with torch.no_grad():  # away from the initial values, so nothing vanishes by accident
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _rotated(data, R):
    dr = data.clone()
    dr.pos, dr.cell = data.pos @ R.T, data.cell @ R.T
    return dr


def _frames(model, data):
    model._cache.clear()
    return model.frames(data)


def _perfect(kind):
    if kind == "graphene":
        atoms = graphene(a=2.46, vacuum=6.0).repeat((4, 4, 1))  # pbc (T, T, F)
        atoms.numbers[:] = 14  # the honeycomb geometry with an element of the test basis (it has no C)
        return atoms, [14], 3.0
    atoms = bulk("SiGe", "zincblende", a=5.54, cubic=True).repeat((2, 2, 2))
    return atoms, [14, 32], 4.0


@pytest.fixture(scope="module")
def rattled():
    data, info = _graph(tiny_hfo2(3), [8, 72], 4.0)
    return data, info


def test_rotation_to_x_is_a_rotation_onto_ex():
    u = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u = torch.cat([u, torch.tensor([[-1.0, 0, 0], [1.0, 0, 0], [-1.0, 1e-13, 0]], dtype=torch.float64)])
    u = u / u.norm(dim=1, keepdim=True)
    R = rotation_to_x(u)
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye.expand_as(R), atol=1e-9, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(len(u), dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(torch.einsum("mab,mb->ma", R, u), eye[0].expand_as(u), atol=1e-6, rtol=0)


def test_frames_rotate_with_a_rattled_structure(rattled):
    """No ties on a rattled cell: every frame is chosen from distances only and R(Q x) = R(x) Q^T."""
    data, info = rattled
    model = _model(info)
    fr = _frames(model, data)
    assert not fr.node.global_info.any() and not fr.pair.global_info.any()
    assert not fr.node.degenerate.any() and not fr.pair.degenerate.any()
    for seed in (1, 2):
        Q = random_rotation(seed)
        frq = _frames(model, _rotated(data, Q))
        assert torch.equal(frq.pair.anchor, fr.pair.anchor)
        torch.testing.assert_close(frq.node.R, fr.node.R @ Q.T, atol=1e-12, rtol=0)
        torch.testing.assert_close(frq.pair.R, fr.pair.R @ Q.T, atol=1e-12, rtol=0)


def test_offsite_anchor_is_the_atom_with_the_smaller_dmin():
    """Eq. 14: atom 0 has the nearer nearest neighbour, so the pair (0, 1) is anchored at 0 with
    x' along r_01 and v2 = the bond to 0's nearest neighbour (not to 1, which is collinear)."""
    pos = np.array([[0, 0, 0], [2.0, 0, 0], [-0.9, 0.5, 0.1], [2.3, 1.4, -0.3]])
    atoms = Atoms("OOOO", positions=pos, cell=np.eye(3) * 20, pbc=False)
    data, info = _graph(atoms, [8], 2.5, targets=False)
    fr = _frames(_model(info), data)
    e = int(torch.nonzero((data.edge_index[0] == 1) & (data.edge_index[1] == 0))[0])
    p = int(fr.pair.pair_of[e])
    assert int(fr.pair.anchor[p]) == 0 and int(fr.pair.other[p]) == 1
    assert not bool(fr.pair.forward[e])  # edge 1 -> 0 runs other -> anchor: its block is h^T
    x = torch.tensor([1.0, 0, 0], dtype=torch.float64)
    y = torch.linalg.cross(x, torch.as_tensor(pos[2], dtype=torch.float64))
    torch.testing.assert_close(fr.pair.R[p, 0], x)
    torch.testing.assert_close(fr.pair.R[p, 1], y / y.norm())


@pytest.mark.parametrize("kind", ["graphene", "zincblende"])
def test_perfect_crystals_deterministic_not_covariant(kind):
    """Ties everywhere: Algorithm 1 picks frames with global coordinates. They are unique
    (independent of the atom order), but not rotation-covariant: the error is measured and printed."""
    atoms, elements, cutoff = _perfect(kind)
    data, info = _graph(atoms, elements, cutoff, targets=False)
    model = _model(info)
    fr = _frames(model, data)
    n_tie_n, n_tie_p = int(fr.node.global_info.sum()), int(fr.pair.global_info.sum())
    assert n_tie_n > 0 and n_tie_p > 0
    # the same frames for a permuted atom order
    perm = np.random.default_rng(0).permutation(len(atoms))
    inv = np.argsort(perm)
    dp, _ = _graph(atoms[perm], elements, cutoff, targets=False)
    frp = _frames(model, dp)
    torch.testing.assert_close(frp.node.R[inv], fr.node.R, atol=1e-12, rtol=0)
    keys = {(int(i), int(j), *map(int, s)): k for k, ((i, j), s) in
            enumerate(zip(dp.edge_index.T, dp.edge_shift.round().long()))}
    idx = [keys[(int(inv[i]), int(inv[j]), *map(int, s))] for (i, j), s in
           zip(data.edge_index.T, data.edge_shift.round().long())]
    torch.testing.assert_close(frp.pair.R[frp.pair.pair_of[idx]], fr.pair.R[fr.pair.pair_of], atol=1e-12, rtol=0)
    assert torch.equal(frp.pair.forward[idx], fr.pair.forward)
    with torch.no_grad():
        model._cache.clear()
        p = model(data)
        model._cache.clear()
        p2 = model(data)
        assert torch.equal(p.node_blocks, p2.node_blocks) and torch.equal(p.edge_blocks, p2.edge_blocks)
        Q = random_rotation(5)
        model._cache.clear()
        pq = model(_rotated(data, Q))
    D = wigner_D_shells(info.layout.slot_ls, Q)
    nm, em = block_masks(data)
    scale = float(p.edge_blocks[em].abs().max())
    err = float(torch.cat([((D @ p.node_blocks @ D.T - pq.node_blocks)[nm]).abs(),
                           ((D @ p.edge_blocks @ D.T - pq.edge_blocks)[em]).abs()]).max()) / scale
    print(f"\nlcnet on perfect {kind}: {n_tie_n}/{data.num_nodes} on-site and {n_tie_p}/{fr.pair.R.shape[0]} "
          f"pair frames use global information; rotation error {err:.3e} (relative)")
    assert np.isfinite(err)


def test_forward_backward_cover_every_element_once(rattled):
    _, info = rattled
    model = _model(info)
    n = info.n_max
    flat = model.flat_pair
    assert sorted(flat.tolist()) == list(range(n * n))
    n_up = n * (n + 1) // 2
    row, col = flat // n, flat % n
    assert (row[:n_up] <= col[:n_up]).all() and (row[n_up:] > col[n_up:]).all()  # forward: upper + diagonal
    assert model.head_fwd.lin2.out_features == n_up and model.head_bwd.lin2.out_features == n * (n - 1) // 2


@pytest.mark.parametrize("twin", [False, True], ids=["two-heads", "two-models"])
def test_raw_output_is_hermitian_and_covariant(twin, rattled):
    data, info = rattled
    model = _model(info, twin_models=twin)
    with torch.no_grad():
        p = model(data)
        Q = random_rotation(9)
        pq = model(_rotated(data, Q))
    assert hermiticity_error(p, data, relative=True) < 1e-12
    D = wigner_D_shells(info.layout.slot_ls, Q)
    nm, em = block_masks(data)
    torch.testing.assert_close((D @ p.edge_blocks @ D.T)[em], pq.edge_blocks[em], atol=1e-10, rtol=0)
    torch.testing.assert_close((D @ p.node_blocks @ D.T)[nm], pq.node_blocks[nm], atol=1e-10, rtol=0)


def test_focal_loss_value_and_local_frame_invariance(rattled):
    data, info = rattled
    model = _model(info)
    ref = Prediction(data.y_node.clone(), data.y_edge.clone())
    s, c = model.loss_terms(ref, data)
    nm, em = block_masks(data)
    assert float(s) == 0.0 and int(c) == int(nm.sum() + em.sum())
    # an s-s on-site entry is rotation-invariant: the loss is the paper's formula on it, in eV
    bad = Prediction(ref.node_blocks.clone(), ref.edge_blocks)
    bad.node_blocks[0, 0, 0] += 0.01
    s, _ = model.loss_terms(bad, data)
    a = 0.01 * HARTREE_EV
    assert float(s) == pytest.approx(a / (1 + np.exp(-0.25 * a)) ** 2, rel=1e-10)
    # random errors: the loss of the rotated structure with the rotated errors is the same
    g = torch.Generator().manual_seed(0)
    pred = Prediction(data.y_node + 0.01 * torch.randn(data.y_node.shape, generator=g, dtype=torch.float64),
                      data.y_edge + 0.01 * torch.randn(data.y_edge.shape, generator=g, dtype=torch.float64))
    Q = random_rotation(3)
    D = wigner_D_shells(info.layout.slot_ls, Q)
    dq = _rotated(data, Q)
    dq.y_node, dq.y_edge = D @ data.y_node @ D.T, D @ data.y_edge @ D.T
    pq = Prediction(D @ pred.node_blocks @ D.T, D @ pred.edge_blocks @ D.T)
    s1, _ = model.loss_terms(pred, data)
    s2, _ = model.loss_terms(pq, dq)
    assert float(s1) == pytest.approx(float(s2), rel=1e-10)
    # ... while the same penalty on the global-frame entries changes under the rotation
    def glob(p, d):
        e = torch.cat([(p.node_blocks - d.y_node)[nm], (p.edge_blocks - d.y_edge)[em]]).abs() * HARTREE_EV
        return float((torch.sigmoid(0.25 * e) ** 2 * e).sum())
    assert abs(glob(pred, data) - glob(pq, dq)) > 1e-6 * glob(pred, data)


def test_prepare_fits_invariant_onsite_means(rattled):
    data, info = rattled
    model = _model(info)
    model.prepare([data])
    S = model.onsite_shift.detach().clone()
    z = info.elements.index(8)
    oxygen = data.z == 8
    assert float(S[z, 0, 0]) == pytest.approx(float(data.y_node[oxygen, 0, 0].mean()), rel=1e-12)
    p_slot = [k for k, l in enumerate(info.layout.slot_ls) if l == 1][0]
    o = info.layout.slot_offsets[p_slot]
    tr = data.y_node[oxygen, o:o + 3, o:o + 3].diagonal(dim1=1, dim2=2).sum(1).mean() / 3
    torch.testing.assert_close(S[z, o:o + 3, o:o + 3], tr * torch.eye(3, dtype=torch.float64))
    D = wigner_D_shells(info.layout.slot_ls, random_rotation(2))
    torch.testing.assert_close(D @ S @ D.T, S.expand(len(info.elements), -1, -1), atol=1e-12, rtol=0)
    # the shift is part of the prediction, and the prediction stays hermitian
    with torch.no_grad():
        before = model(data).node_blocks
        model.onsite_shift.zero_()
        after = model(data).node_blocks
    torch.testing.assert_close(before - after, S[model.z_index[data.z]] * block_masks(data)[0], atol=1e-12, rtol=0)


def test_loss_terms_harness_fallback(rattled):
    _, info = rattled
    assert LCNet(info, loss="harness").loss_terms(None, None) is None


@pytest.mark.parametrize("num_layers", [0, 1, 2])
def test_receptive_field_is_num_layers_plus_one(num_layers):
    """Frames and LC words read both endpoints' neighbour lists: a halo of num_layers hops is not
    exact, num_layers + 1 (= message_passing_layers) is."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((6, 1, 1))
    atoms.rattle(0.05, seed=7)
    atoms.numbers[::5] = 32  # two species: with one, the first layer's messages W v_k are all equal
    data, info = _graph(atoms, [14, 32], 2.6)
    model = _model(info, num_layers=num_layers)
    assert model.message_passing_layers == num_layers + 1

    def run(d):
        with torch.no_grad():
            model._cache.clear()
            out = model(collate([d]))
        return out.node_blocks, out.edge_blocks

    full = run(data)
    for hops, exact in ((num_layers, False), (num_layers + 1, True)):
        parts = partition(data, "slices", n_slices=3, hops=hops, flow=model.message_flow)
        node, edge = scatter_predictions(parts, [run(p) for p in parts], data)
        diff = max(float((node - full[0]).abs().max()), float((edge - full[1]).abs().max()))
        assert (diff < 1e-10) == exact, (hops, diff)


def test_paper_preset_parameter_count():
    """The paper's model has 524,731 parameters for a 13-orbital basis (s2p2d1); ours is printed."""
    from zoo.models import build_model

    layout = OrbitalLayout(get_basis("dzvp-molopt-sr"), [14])  # Si 2s2p1d: 13 orbitals
    assert layout.n_max == 13
    model = build_model("lcnet", DatasetInfo(layout, 8.0), preset="paper")
    n = sum(p.numel() for p in model.parameters())
    print(f"\nlcnet paper preset: {n:,} parameters (paper: 524,731)")
    assert 0.8 * 524_731 < n < 1.2 * 524_731
