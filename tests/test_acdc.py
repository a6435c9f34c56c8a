"""The acdc (GEARS H) backbone: O(3) equivariance, parameter counts against gears_h, the FusedTensor,
locality and partition exactness, the scale-shift fit, the model-owned loss, hermiticity, learning.
Tiny graphs, float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from tests.conftest import sige_chain_atoms, tiny_hfo2
from zoo.bench.trainer import TrainConfig
from zoo.data.format import Structure
from zoo.data.partition import partition, partition_for_model, scatter_predictions
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import DatasetInfo, block_masks, edge_vectors, record_to_data
from zoo.errors import ConfigError
from zoo.models.acdc import ACDC
from zoo.models.acdc.irreps import FullTensor, FusedTensor
from zoo.models.acdc.readout import fit_offsite_shift
from zoo.models.contract import symmetrize_prediction
from zoo.models.registry import build_model, load_preset
from zoo.physics.basis import BasisSet, OrbitalLayout, get_basis
from zoo.physics.wigner import random_rotation, wigner_D, wigner_D_shells

BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [8, 72])
CUT = 3.5
SMALL = dict(num_radial=6, embedding_features=6, tensordense_features=4, mlp_widths=(6, 4, 6), max_z=73)
WSE2 = OrbitalLayout(BasisSet("gears-wse2", {74: (0, 2, 1), 34: (0, 1, 2)}), [34, 74])


def _data(atoms: Atoms, cutoff: float = CUT, layout: OrbitalLayout = LAYOUT):
    rec = toy_record(Structure.from_ase(atoms), layout.basis, cutoff)
    return record_to_data(rec, layout, dtype=torch.float64)


def _model(cutoff: float = CUT, seed: int = 0, perturb: bool = True, **kw) -> ACDC:
    torch.manual_seed(seed)
    m = build_model("acdc", DatasetInfo(LAYOUT, cutoff), **{**SMALL, **kw}).double().eval()
    if perturb:  # move every parameter off its initial value (zero-initialised kernels included)
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _transformed(data, R):
    d = data.clone()
    d.pos = data.pos @ R.T
    d.cell = data.cell @ R.T
    return d


@pytest.fixture(scope="module")
def hfo2():
    return _data(tiny_hfo2(0, (1, 1, 1)))


def test_presets_load_and_bad_hyperparameters():
    for name in ("cpu", "paper", "paper-ntd2"):
        p = load_preset("acdc", name)
        assert {"lr", "lr_decay", "patience", "min_lr"} <= set(p["train"])
        # GEARS H's optimiser: Adan, lr 5e-3, decoupled weight decay 1e-3
        cfg = TrainConfig.from_dict(p["train"], where=f"acdc:{name}:train")
        assert (cfg.optimizer, cfg.lr, cfg.weight_decay) == ("adan", 5e-3, 1e-3)
    assert load_preset("acdc", "paper")["num_tensordenses"] == 1
    assert load_preset("acdc", "paper-ntd2")["num_tensordenses"] == 2
    info = DatasetInfo(LAYOUT, CUT)
    with pytest.raises(ConfigError, match="cutoff"):
        ACDC(info, cutoff=CUT + 1)
    with pytest.raises(ConfigError, match="max_degree=1 is too small"):
        ACDC(info, max_degree=1)
    with pytest.raises(ConfigError, match="mlp_widths"):
        ACDC(info, mlp_widths=(8, 4))
    with pytest.raises(ConfigError, match="tensor"):
        ACDC(info, tensor="cg")
    with pytest.raises(ConfigError, match="readout_tensor"):
        ACDC(info, readout_tensor="e3x")
    with pytest.raises(ConfigError, match="max_z"):
        ACDC(info, max_z=50)


@pytest.mark.parametrize("kw", [{}, {"num_tensordenses": 2}, {"tensor": "full"}, {"readout_tensor": "fused"},
                                {"global_mean": True}], ids=["fused", "ntd2", "full", "fused-readout", "global-mean"])
@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoinversion"])
def test_o3_equivariance_of_raw_output(hfo2, kw, improper):
    m = _model(**kw)
    R = random_rotation(11, improper=improper)
    D = wigner_D_shells(LAYOUT.slot_ls, R)
    with torch.no_grad():
        p, q = m(hfo2), m(_transformed(hfo2, R))
    scale = float(p.edge_blocks.abs().max())
    assert scale > 1e-3 and float(p.node_blocks.abs().max()) > 1e-3
    assert float((D @ p.node_blocks @ D.T - q.node_blocks).abs().max()) < 1e-10 * max(1.0, scale)
    assert float((D @ p.edge_blocks @ D.T - q.edge_blocks).abs().max()) < 1e-10 * max(1.0, scale)


def test_pseudotensor_channels_matter_under_inversion(hfo2):
    """The odd-parity (pseudotensor) channels carry signal: flipping their sign by hand (what a model
    that mistook them for ordinary tensors would do under inversion) changes the output."""
    m = _model()
    with torch.no_grad():
        on, off = m.irreps(hfo2)
    assert float(on[:, 1].abs().max()) > 1e-4 and float(off[:, 1].abs().max()) > 1e-4


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_matches_gears_h_wse2():
    """WSe2 example (W [0,2,1], Se [0,1,2]; 4 readout channels). gears_h (e3x) has 82,909 parameters
    with N_TD = 1 and 115,393 with N_TD = 2; e3x's Tensor keeps 1000 F weights per readout of which
    only the 260 F valid paths act, so this port with the same FusedTensor has 82,909 - 2 * 740 * 4."""
    m = ACDC(DatasetInfo(WSE2, 8.0), num_tensordenses=1)
    assert m.packing.features == 4
    # gears_h's module breakdown (notes: radial 3,448; TensorDense 3,384; nonlinear blocks 8,952)
    assert _count(m.atom.radial) == 83 * 32 + 32 * 24 + 24 == 3448
    assert _count(m.atom.tds) == 3384
    assert _count(m.atom.blocks) == 8952
    assert _count(m.bond) == 32148
    assert _count(m.dense) == 21841
    valid = m.readout_on.tensor.n_paths
    assert valid == 260 and _count(m.readout_on) == 6568 - (1000 - 260) * 4 == 3608
    assert _count(m) == 76989 == 82909 - 2 * (1000 - 260) * 4
    m2 = ACDC(DatasetInfo(WSE2, 8.0), num_tensordenses=2)
    assert _count(m2) == 115393 - 2 * (1000 - 260) * 4


@pytest.mark.parametrize("p1,p2", [(2, 2), (1, 1), (1, 2)])
def test_fused_tensor_parameters_and_equivariance(p1, p2):
    """40 parameters per feature for l <= 4 (8 kernels of (L+1) F), and the product commutes with O(3)."""
    f = 3
    ft = FusedTensor(p1, 4, p2, 4, 4, f).double()
    assert _count(ft) == 40 * f
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ft.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    x1 = torch.randn(5, p1, 25, f, generator=g, dtype=torch.float64)
    x2 = torch.randn(5, p2, 25, f, generator=g, dtype=torch.float64)
    R = random_rotation(3, improper=True)
    proper = -R

    def act(x):  # O(3) action on a feature array: D_l(proper part) times the parity under inversion
        out = torch.empty_like(x)
        for l in range(5):
            D = wigner_D(l, proper)
            for ch in range(x.shape[1]):
                parity = (-1) ** l if x.shape[1] == 1 else (1 if ch == 0 else -1)
                out[:, ch, l * l:(l + 1) ** 2] = parity * torch.einsum("mn,rnf->rmf", D, x[:, ch, l * l:(l + 1) ** 2])
        return out

    with torch.no_grad():
        y = ft(x1, x2)
    assert y.shape == (5, ft.out_parity, 25, f)
    with torch.no_grad():
        assert torch.allclose(ft(act(x1), act(x2)), act(y), atol=1e-11)
        assert float(y.abs().max()) > 1e-3
        assert torch.allclose(ft(2 * x1, x2), 2 * y, atol=1e-12)  # bilinear


def test_full_tensor_is_the_cg_product():
    """One path of the full product equals the Clebsch-Gordan contraction of the two irreps."""
    from zoo.physics.coupling import coupling_matrix

    t = FullTensor(2, 2, 2, 2, 2, 1).double()
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(1, 2, 9, 1, generator=g, dtype=torch.float64)
    x2 = torch.randn(1, 2, 9, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        t.weight.zero_()
        # the (l1 = 1, odd) x (l2 = 2, even) -> l3 = 2 path, whose output is odd
        k = t.pairs.index((1, 2))
        rows = getattr(t, f"rows{k}")
        cols = getattr(t, f"cols{k}")
        row = int(rows[1, 0, cols.tolist().index(4)])  # rows: [channel1, channel2, output column]
        t.weight[row] = 1.0
    out = t(x1, x2)
    q = torch.as_tensor(coupling_matrix(1, 2)).reshape(3, 5, 15)  # columns: L = 1 (3), L = 2 (5), L = 3 (7)
    ref = torch.einsum("i,j,ijk->k", x1[0, 1, 1:4, 0], x2[0, 0, 4:9, 0], q[:, :, 3:8])
    assert torch.allclose(out[0, 1, 4:9, 0], ref, atol=1e-12)
    assert float(out[0, 0].detach().abs().max()) == 0.0 and float(out[0, 1, :4].detach().abs().max()) == 0.0
    assert t.n_paths == 2 * 2 * sum(1 for a in range(3) for b in range(3) for c in range(abs(a - b), min(a + b, 2) + 1))


def _cluster_with_far_atom(far: bool):
    atoms = tiny_hfo2(0, (1, 1, 1))
    atoms.pbc = False
    atoms.cell = [30.0, 30.0, 30.0]
    if far:
        atoms += Atoms("O", positions=[[25.0, 25.0, 25.0]])
    return _data(atoms)


@pytest.mark.parametrize("global_mean", [False, True])
def test_far_atom_changes_outputs_only_with_global_mean(global_mean):
    """An atom beyond every cutoff must not change the others' blocks; gears_h's structure-wide
    centring (global_mean) makes it do so, which is why the default centres per row."""
    m = _model(global_mean=global_mean)
    a, b = _cluster_with_far_atom(False), _cluster_with_far_atom(True)
    assert int((b.edge_index == a.num_nodes).sum()) == 0  # the far atom has no neighbours
    with torch.no_grad():
        pa, pb = m(a), m(b)
    n, e = a.num_nodes, a.edge_index.shape[1]
    diff = max(float((pa.node_blocks - pb.node_blocks[:n]).abs().max()),
               float((pa.edge_blocks - pb.edge_blocks[:e]).abs().max()))
    if global_mean:
        assert diff > 1e-6
    else:
        assert diff < 1e-12


@pytest.fixture(scope="module")
def sige_chain():
    atoms = sige_chain_atoms()
    layout = OrbitalLayout(BASIS, [14, 32])
    cutoff = 2.6
    rec = toy_record(Structure.from_ase(atoms), BASIS, cutoff)
    return record_to_data(rec, layout, torch.float64), DatasetInfo(layout, cutoff)


@pytest.mark.parametrize("global_mean", [False, True])
def test_partition_exactness(sige_chain, global_mean):
    """Per-row centring: partitions with the declared halo (1 hop) reproduce the full graph; gears_h's
    global mean does not (the mean sees the halo's incomplete atoms); no halo is not exact."""
    from zoo.data.torch_data import collate

    data, info = sige_chain
    torch.manual_seed(0)
    m = build_model("acdc", info, **{**SMALL, "max_z": 33}, global_mean=global_mean).double().eval()
    assert m.message_passing_layers == 1

    def run(d):
        with torch.no_grad():
            out = m(collate([d]))
        return out.node_blocks, out.edge_blocks

    full = run(data)
    parts = partition_for_model(data, m, "slices", n_slices=3)
    got = scatter_predictions(parts, [run(p) for p in parts], data)
    err = max(float((got[0] - full[0]).abs().max()), float((got[1] - full[1]).abs().max()))
    if global_mean:
        assert err > 1e-8
    else:
        assert err < 1e-10
        thin = partition(data, "slices", n_slices=3, hops=0, flow=m.message_flow)
        got0 = scatter_predictions(thin, [run(p) for p in thin], data)
        assert max(float((got0[0] - full[0]).abs().max()), float((got0[1] - full[1]).abs().max())) > 1e-6


def test_hermitian_only_after_symmetrization(hfo2):
    """Directed pairs are predicted separately (raw H_ji != H_ij^T, so hermitian = False), and the
    final (H + H^dagger)/2 is exact."""
    from zoo.models.contract import hermiticity_error

    m = _model()
    assert m.hermitian is False
    with torch.no_grad():
        p = m(hfo2)
        s = symmetrize_prediction(p, hfo2)
    assert hermiticity_error(p, hfo2) > 1e-6
    assert hermiticity_error(s, hfo2) < 1e-12


def test_onsite_scale_shift_fit_and_application(hfo2):
    """prepare() sets, per element and channel, the mean and std of the even scalar targets, and the
    forward then maps the raw readout scalar x to x |std| + mean (other components untouched)."""
    m = _model(perturb=False, shift_fit_maxiter=20)
    graphs = [_data(tiny_hfo2(k, (1, 1, 1))) for k in range(2)]
    m.prepare(graphs)
    we, pk = m.we, m.packing
    for z in (8, 72):
        zi = int(m.z_index[z])
        for f in range(pk.features):
            r = int(pk.scalar_of_feature[f])
            if r < 0 or not bool(we.pair_mask(z, z)[r]):
                assert float(m.on_shift[zi, f]) == 0.0 and float(m.on_scale[zi, f]) == 1.0
                continue
            vals = torch.cat([we.to_coupled(g.y_node[g.z == z])[:, r] for g in graphs])
            assert math.isclose(float(m.on_shift[zi, f]), float(vals.mean()), rel_tol=1e-10, abs_tol=1e-14)
            assert math.isclose(float(m.on_scale[zi, f]), float(vals.std(unbiased=False)), rel_tol=1e-10, abs_tol=1e-14)
    raw = _model(perturb=False, shift_fit_maxiter=20)
    with torch.no_grad():
        on0, off0 = raw.irreps(hfo2)
        on1, off1 = m.irreps(hfo2)
    zi = m.z_index[hfo2.z]
    assert torch.allclose(on1[:, 0, 0], on0[:, 0, 0] * m.on_scale[zi].abs() + m.on_shift[zi], atol=1e-12)
    assert torch.equal(on1[:, :, 1:], on0[:, :, 1:]) and torch.equal(on1[:, 1], on0[:, 1])
    d = edge_vectors(hfo2).norm(dim=1)
    i, j = hfo2.edge_index
    a, ll, b = (t[m.z_index[hfo2.z[i]], m.z_index[hfo2.z[j]]] for t in (m.off_a, m.off_l, m.off_b))
    assert torch.allclose(off1[:, 0, 0], off0[:, 0, 0] + a * torch.exp(-(d[:, None] / ll) ** b), atol=1e-12)
    assert bool((m.off_a != 0).any())


def test_fitted_constants_travel_with_the_state_dict(hfo2):
    m = _model(perturb=False, shift_fit_maxiter=20)
    m.prepare([hfo2])
    fresh = _model(perturb=False, seed=5)
    fresh.load_state_dict(m.state_dict())
    with torch.no_grad():
        a, b = m(hfo2), fresh(hfo2)
    assert torch.equal(a.node_blocks, b.node_blocks) and torch.equal(a.edge_blocks, b.edge_blocks)
    assert {"on_shift", "on_scale", "off_a", "off_l", "off_b", "loss_calls"} <= set(m.state_dict())


def test_float32_matches_float64(hfo2):
    m64 = _model()
    m32 = _model().float()
    d32 = hfo2.clone()
    d32.pos, d32.cell, d32.edge_shift = hfo2.pos.float(), hfo2.cell.float(), hfo2.edge_shift.float()
    with torch.no_grad():
        p64, p32 = m64(hfo2), m32(d32)
    assert p32.edge_blocks.dtype == torch.float32
    assert torch.allclose(p32.edge_blocks.double(), p64.edge_blocks, atol=1e-4)
    assert torch.allclose(p32.node_blocks.double(), p64.node_blocks, atol=1e-4)


def test_offsite_shift_fit_recovers_a_stretched_exponential():
    """dual_annealing on a * exp(-(d / l)^b) + small noise recovers (a, l, b); sub-threshold channels get a = 0."""
    rng = np.random.default_rng(0)
    d = rng.uniform(1.5, 6.0, 400)
    a_ev, length, b = -3.0, 2.5, 1.7
    y = (a_ev * np.exp(-(d / length) ** b) + 1e-3 * rng.normal(size=d.size)) / 27.211386245988
    fa, fl, fb = fit_offsite_shift(d, y, maxiter=300)
    assert math.isclose(fa * 27.211386245988, a_ev, rel_tol=0.05)
    assert math.isclose(fl, length, rel_tol=0.05) and math.isclose(fb, b, rel_tol=0.1)
    assert fit_offsite_shift(d, 1e-5 * y, maxiter=10)[0] == 0.0


def test_loss_is_gears_h_weighted_mse_and_rmse(hfo2):
    m = _model(perturb=False)
    with torch.no_grad():
        p = m(hfo2)
    s, c = m.loss_terms(p, hfo2)
    nm, em = block_masks(hfo2)
    mse_on = ((p.node_blocks - hfo2.y_node)[nm] ** 2).mean()
    mse_off = ((p.edge_blocks - hfo2.y_edge)[em] ** 2).mean()
    ref = 5 * 0.5 * ((mse_on + 4 * mse_off) / 5 + (mse_on.sqrt() + 4 * mse_off.sqrt()) / 5)
    assert torch.allclose(m.loss_outer(s / c), ref, rtol=1e-12)
    # (sum, count) pooled over two halves of the labels equals the whole batch (what DDP needs)
    h1, h2 = hfo2.clone(), hfo2.clone()
    h1.edge_label_mask = torch.arange(hfo2.edge_index.shape[1]) % 2 == 0
    h2.edge_label_mask = ~h1.edge_label_mask
    h2.node_label_mask = torch.zeros_like(hfo2.node_label_mask)
    (s1, c1), (s2, c2) = m.loss_terms(p, h1), m.loss_terms(p, h2)
    assert torch.allclose(m.loss_outer((s1 + s2) / (c1 + c2)), ref, rtol=1e-12)
    # the trainer's DDP surrogate, element-wise on the (on, off) two-vectors: f'(m) . dS / C
    m.zero_grad()
    s, c = m.loss_terms(m(hfo2), hfo2)
    m.loss_outer(s / c).backward()
    direct = [p_.grad.clone() for p_ in m.parameters()]
    x = (s / c).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(m.loss_outer(x), x)
    m.zero_grad()
    s, c = m.loss_terms(m(hfo2), hfo2)
    (g * s / c).sum().backward()
    assert all(torch.allclose(a, p_.grad, rtol=1e-10, atol=1e-14) for a, p_ in zip(direct, m.parameters()))


def test_bond_fraction_keeps_a_fresh_deterministic_subset(hfo2):
    m = _model(perturb=False, bond_fraction=0.3).train()
    with torch.no_grad():
        p = m(hfo2)
    _, c_all = _model(perturb=False).loss_terms(p, hfo2)
    s1, c1 = m.loss_terms(p, hfo2)
    s2, _ = m.loss_terms(p, hfo2)
    assert 0.15 < float(c1[1] / c_all[1]) < 0.45
    assert float(s1[1]) != float(s2[1])  # the next call draws another subset
    assert float(c1[0]) == float(c_all[0])  # on-site blocks are never dropped
    m2 = _model(perturb=False, bond_fraction=0.3).train()
    assert torch.equal(m2.loss_terms(p, hfo2)[1], c1)  # same counter, same draw
    assert torch.equal(m.eval().loss_terms(p, hfo2)[1], c_all)  # validation sees every pair


def test_learns_a_toy_hamiltonian_and_beats_the_mean_baseline():
    """Adam on the model-owned loss: the loss falls and the unseen structure's MAE beats `mean`."""
    cutoff = 3.0
    train = [_data(tiny_hfo2(k, (1, 1, 1)), cutoff) for k in range(2)]
    test = _data(tiny_hfo2(5, (1, 1, 1)), cutoff)
    info = DatasetInfo(LAYOUT, cutoff)
    base = build_model("mean", info).double()
    base.prepare(train)
    torch.manual_seed(0)
    m = build_model("acdc", info, **SMALL, shift_fit_maxiter=50).double()
    m.prepare(train)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for step in range(20):
        g = train[step % 2]
        opt.zero_grad()
        s, c = m.loss_terms(m(g), g)
        loss = m.loss_outer(s / c)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-4:]) < 0.4 * np.mean(losses[:2])

    def mae(model):
        model.eval()
        with torch.no_grad():
            p = model(test)
        nm, em = block_masks(test)
        return float(torch.cat([(p.node_blocks - test.y_node)[nm], (p.edge_blocks - test.y_edge)[em]]).abs().mean())

    assert mae(m) < 0.6 * mae(base)
