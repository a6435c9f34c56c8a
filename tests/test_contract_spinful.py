"""The spinful backbone contract (docs/adr/0006), checked for every registered backbone.

Backbones with `spinful = True`: complex [*, 2 n_max, 2 n_max] output, SU(2) rotation equivariance
(proper and improper: D_s = kron(U(R), D_layout(R)), spin axial), time reversal (a prediction for
a structure is T-symmetric), raw hermiticity (held to 1e-10 for `hermitian = True`, measured and
printed otherwise), atom permutation and gradients. Every spinless backbone must refuse a spinful
dataset at construction with one clear sentence (ConfigError / ModelError), not a padding error,
unless it declares `spin_independent` (kron(I2, H0) on spinful data, e.g. the `mean` baseline): such
a backbone is held to the whole spinful contract except the checks that it predicts spin-orbit terms.
Parameters are perturbed away from their initial values first, so a zero-initialised term
(e.g. a learned SOC strength) cannot pass by accident.
"""

import numpy as np
import pytest
import torch

from tests.conftest import check_raw_hermiticity, tiny_hfo2
from zoo.data.format import Structure
from zoo.data.synthetic import toy_spinful_record
from zoo.data.torch_data import DatasetInfo, block_masks, record_to_data
from zoo.errors import ConfigError, ModelError
from zoo.models import build_model, list_models
from zoo.models.registry import model_class
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.spin import spinful_wigner, time_reverse
from zoo.physics.wigner import random_rotation, wigner_D_shells

BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [8, 72])
CUTOFF = 4.0
#: every backbone that accepts spinful data; SPINLESS must refuse it
SPINFUL = [m for m in list_models() if model_class(m).spinful or model_class(m).spin_independent]
SPINLESS = [m for m in list_models() if m not in SPINFUL]
INFO = DatasetInfo(LAYOUT, CUTOFF, spinful=True, name="contract-soc")


def test_some_backbone_is_spinful():
    assert "trivial-soc" in SPINFUL and "mean" in SPINFUL


def predicts_soc(name) -> bool:
    return not model_class(name).spin_independent


def make_model(name):
    torch.manual_seed(0)
    model = build_model(name, INFO).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def graph(atoms):
    rec = toy_spinful_record(Structure.from_ase(atoms), BASIS, CUTOFF, overlap=False)
    return record_to_data(rec, LAYOUT, dtype=torch.float64)


def edge_keys(data):
    return [(int(i), int(j), *map(int, s)) for (i, j), s in zip(data.edge_index.T, data.edge_shift.round().long())]


def _scale(p, nm, em) -> float:
    return float(max(p.edge_blocks[em].abs().max(), p.node_blocks[nm].abs().max()))


@pytest.fixture(scope="module")
def structure():
    return tiny_hfo2(3)


@pytest.mark.parametrize("name", SPINFUL)
def test_spinful_shapes_and_gradients(name, structure):
    model = make_model(name)
    d = graph(structure)
    pred = model(d)
    n = 2 * LAYOUT.n_max
    assert pred.node_blocks.shape == (d.num_nodes, n, n) and pred.edge_blocks.shape == (d.edge_index.shape[1], n, n)
    assert pred.node_blocks.dtype == torch.complex128 and pred.edge_blocks.dtype == torch.complex128
    nm, em = block_masks(d)
    # spin-flip quadrants are populated on and off site (there is SOC to learn), or exactly zero
    h = LAYOUT.n_max
    flips = (pred.node_blocks[:, :h, h:][nm[:, :h, h:]].abs().max(), pred.edge_blocks[:, :h, h:][em[:, :h, h:]].abs().max())
    if predicts_soc(name):
        assert min(flips) > 1e-6
    else:
        assert max(flips) == 0 and torch.equal(pred.node_blocks[:, :h, :h], pred.node_blocks[:, h:, h:])
    e_n, e_e = (pred.node_blocks - d.y_node)[nm], (pred.edge_blocks - d.y_edge)[em]
    loss = (e_n.abs() ** 2).mean() + (e_e.abs() ** 2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().max() > 0 for g in grads), "a parameter gets no gradient from the complex loss"


@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoinversion"])
@pytest.mark.parametrize("name", SPINFUL)
def test_spinful_su2_equivariance(name, improper, structure):
    model = make_model(name)
    d = graph(structure)
    R = random_rotation(21, improper=improper)
    dr = d.clone()
    dr.pos = d.pos @ R.T
    dr.cell = d.cell @ R.T
    with torch.no_grad():
        p, pr = model(d), model(dr)
    D = spinful_wigner(LAYOUT.slot_ls, R)
    Dh = D.conj().T
    nm, em = block_masks(d)
    scale = _scale(p, nm, em)
    err_n = float((D @ p.node_blocks @ Dh - pr.node_blocks)[nm].abs().max()) / scale
    err_e = float((D @ p.edge_blocks @ Dh - pr.edge_blocks)[em].abs().max()) / scale
    print(f"\n{name} SU(2) {'improper' if improper else 'proper'}: relative error node {err_n:.2e} edge {err_e:.2e}")
    assert err_n < 1e-10 and err_e < 1e-10, (err_n, err_e)
    # the check can fail: the orbital-only rotation (spin left alone) does not match when SOC is on
    if predicts_soc(name):
        Do = torch.kron(torch.eye(2, dtype=D.dtype), wigner_D_shells(LAYOUT.slot_ls, R).to(D.dtype))
        assert float((Do @ p.edge_blocks @ Do.conj().T - pr.edge_blocks)[em].abs().max()) / scale > 1e-6


@pytest.mark.parametrize("name", SPINFUL)
def test_spinful_time_reversal(name, structure):
    model = make_model(name)
    d = graph(structure)
    with torch.no_grad():
        p = model(d)
    nm, em = block_masks(d)
    scale = _scale(p, nm, em)
    err_n = float((time_reverse(p.node_blocks) - p.node_blocks)[nm].abs().max()) / scale
    err_e = float((time_reverse(p.edge_blocks) - p.edge_blocks)[em].abs().max()) / scale
    print(f"\n{name} time reversal: relative error node {err_n:.2e} edge {err_e:.2e}")
    assert err_n < 1e-12 and err_e < 1e-12, (err_n, err_e)


@pytest.mark.parametrize("name", SPINFUL)
def test_spinful_raw_hermiticity(name, structure):
    model = make_model(name)
    d = graph(structure)
    with torch.no_grad():
        p = model(d)
    check_raw_hermiticity(name, p, d)


@pytest.mark.parametrize("name", SPINFUL)
def test_spinful_permutation(name, structure):
    model = make_model(name)
    d = graph(structure)
    perm = np.random.default_rng(0).permutation(len(structure))
    dp = graph(structure[perm])
    with torch.no_grad():
        p, pp = model(d), model(dp)
    inv = np.argsort(perm)
    torch.testing.assert_close(pp.node_blocks[inv], p.node_blocks, atol=1e-9, rtol=1e-7)
    new_pos = {k: e for e, k in enumerate(edge_keys(dp))}
    idx = [new_pos[(int(inv[i]), int(inv[j]), *s)] for i, j, *s in edge_keys(d)]
    torch.testing.assert_close(pp.edge_blocks[idx], p.edge_blocks, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("name", SPINLESS)
def test_spinless_backbones_refuse_spinful_data(name):
    with pytest.raises((ConfigError, ModelError)) as info:
        build_model(name, INFO)
    msg = str(info.value)
    assert "\n" not in msg and msg.count(". ") == 0 and "spin" in msg.lower(), msg


@pytest.mark.parametrize("name", [m for m in SPINFUL if predicts_soc(m)])
def test_spinful_backbones_refuse_spinless_data(name):
    with pytest.raises((ConfigError, ModelError)) as info:
        build_model(name, DatasetInfo(LAYOUT, CUTOFF, spinful=False, name="spinless"))
    assert "spin" in str(info.value).lower()


@pytest.mark.parametrize("name", SPINFUL)
def test_spinful_partitioned_equals_full(name):
    """Augmented partitions (one-way halo for the backbone's depth) reproduce the full-graph spinful output."""
    from ase.build import bulk

    from zoo.data.partition import partition_for_model, scatter_predictions
    from zoo.data.torch_data import collate

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((4, 2, 2))
    atoms.rattle(0.05, seed=7)
    z = atoms.numbers.copy()
    z[::5] = 32
    atoms.numbers = z
    layout = OrbitalLayout(BASIS, [14, 32])
    rec = toy_spinful_record(Structure.from_ase(atoms), BASIS, CUTOFF, overlap=False)
    data = record_to_data(rec, layout, dtype=torch.float64)
    torch.manual_seed(0)
    model = build_model(name, DatasetInfo(layout, CUTOFF, spinful=True, name="partition-soc")).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        full = model(collate([data]))
        for kind, kw in (("slices", {"n_slices": 4}), ("rcb", {"n_parts": 3})):
            parts = partition_for_model(data, model, kind, virtual="one-way", **kw)
            outs = [model(collate([p])) for p in parts]
            node, edge = scatter_predictions(parts, [(o.node_blocks, o.edge_blocks) for o in outs], data)
            assert node.is_complex() and edge.is_complex()
            err = max(float((node - full.node_blocks).abs().max()), float((edge - full.edge_blocks).abs().max()))
            assert err < 1e-12, f"{name} {kind}: partitioned != full ({err:.2e})"
