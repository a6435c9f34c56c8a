"""escn's on-site learning (issue 18): the closed-form node prior and the node/edge balanced loss.

Tiny toy graphs in float64; every test runs in about a second.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_hfo2
from zoo.data.format import Structure
from zoo.data.partition import partition_for_model, scatter_predictions
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import DatasetInfo, block_masks, record_to_data
from zoo.errors import ConfigError
from zoo.models.escn import ESCN
from zoo.models.registry import build_model
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.wigner import random_rotation, wigner_D_shells

CUT = 3.5
SMALL = dict(sphere_channels=4, attn_hidden_channels=4, attn_alpha_channels=4, attn_value_channels=2,
             ffn_hidden_channels=8, edge_channels=8, num_rbf=8, mmax=2)
BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [8, 72])


def _data(seed: int, reps=(1, 1, 1), cutoff: float = CUT):
    rec = toy_record(Structure.from_ase(tiny_hfo2(seed, reps)), BASIS, cutoff)
    return record_to_data(rec, LAYOUT, dtype=torch.float64)


def _model(cutoff: float = CUT, seed: int = 0, **kw) -> ESCN:
    torch.manual_seed(seed)
    return build_model("escn", DatasetInfo(LAYOUT, cutoff), **{**SMALL, **kw}).double().eval()


def _randomize_prior(m: ESCN, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for L in m.node_prior.ls:
        w = getattr(m.node_prior, f"w{L}")
        w.copy_(torch.randn(w.shape, generator=g, dtype=w.dtype))


def _transformed(data, R: torch.Tensor):
    d = data.clone()
    d.pos, d.cell = data.pos @ R.T, data.cell @ R.T
    return d


@pytest.fixture(scope="module")
def hfo2():
    return _data(0)


@pytest.mark.parametrize("improper", [False, True])
def test_prior_is_rotation_and_inversion_covariant(hfo2, improper):
    """With random weights (not only fitted ones): P(R x) = D(R) P(x) D(R)^T, proper and improper R."""
    m = _model(node_prior=True)
    _randomize_prior(m)
    z = m.z_index[hfo2.z]
    R = random_rotation(5, improper=improper)
    D = wigner_D_shells(LAYOUT.slot_ls, R)
    p = m.node_prior(hfo2, z)
    q = m.node_prior(_transformed(hfo2, R), z)
    assert p.abs().max() > 1e-2  # not trivially zero
    assert torch.allclose(D @ p @ D.T, q, atol=1e-10)
    # the whole model stays covariant with the prior added
    a, b = m(hfo2), m(_transformed(hfo2, R))
    assert torch.allclose(D @ a.node_blocks @ D.T, b.node_blocks, atol=1e-10)


def test_prior_is_symmetric_and_permutation_invariant(hfo2):
    m = _model(node_prior=True)
    _randomize_prior(m)
    z = m.z_index[hfo2.z]
    p = m.node_prior(hfo2, z)
    assert torch.equal(p, p.transpose(1, 2))
    g = torch.Generator().manual_seed(3)
    perm = torch.randperm(hfo2.num_nodes, generator=g)
    inv = torch.argsort(perm)
    eperm = torch.randperm(hfo2.edge_index.shape[1], generator=g)
    d = hfo2.clone()
    d.z, d.pos, d.node_orb_mask = hfo2.z[perm], hfo2.pos[perm], hfo2.node_orb_mask[perm]
    d.edge_index = inv[hfo2.edge_index[:, eperm]]
    d.edge_shift = hfo2.edge_shift[eperm]
    q = m.node_prior(d, m.z_index[d.z])
    assert torch.allclose(p[perm], q, atol=1e-12)


def test_prior_fit_beats_the_element_mean_on_unseen_structures():
    """Fitted on 3 toy cells, scored on 2 others: about half the per-element mean's error (measured 0.52).

    The toy on-site blocks are the element's diagonal plus a sum of two-centre terms over the
    neighbours, the kind of two-body environment the prior models; it does not reach zero because the
    toy's terms switch off abruptly at the cutoff while the prior's features go smoothly to zero."""
    train = [_data(s) for s in (10, 11, 12)]
    test = [_data(s) for s in (20, 21)]
    m = _model(node_prior=True)
    mean = build_model("mean", DatasetInfo(LAYOUT, CUT)).double().eval()  # the per-element mean baseline
    m.prepare(train)
    mean.prepare(train)

    def mae(model, prior_only):
        err, n = 0.0, 0
        for g in test:
            mask = block_masks(g)[0]
            with torch.no_grad():
                p = model.node_prior(g, model.z_index[g.z]) if prior_only else model(g).node_blocks
            err += (p - g.y_node)[mask].abs().sum().item()
            n += int(mask.sum())
        return err / n

    e_prior, e_mean = mae(m, True), mae(mean, False)
    assert e_prior < 0.65 * e_mean, (e_prior, e_mean)
    # the network adds its residual to the prior: same seed without the prior = output - prior
    g = test[0]
    with torch.no_grad():
        residual = m(g).node_blocks - m.node_prior(g, m.z_index[g.z])
        assert torch.allclose(residual, _model().eval()(g).node_blocks, atol=1e-12)


def test_prior_ignores_virtual_atoms_and_survives_the_state_dict():
    train = _data(10)
    m = _model(node_prior=True)
    m.prepare([train])
    w = {k: v.clone() for k, v in m.state_dict().items() if "node_prior" in k}
    assert w and all(v.abs().max() > 0 for v in w.values() if v.numel())
    # an unlabelled copy with garbage targets changes nothing: only labelled blocks are fitted
    junk = train.clone()
    junk.node_label_mask = torch.zeros_like(train.node_label_mask)
    junk.y_node = torch.randn_like(train.y_node)
    m2 = _model(node_prior=True)
    m2.prepare([train, junk])
    for k, v in m2.state_dict().items():
        if "node_prior" in k:
            assert torch.allclose(v, w[k], atol=1e-10), k
    m3 = _model(node_prior=True, seed=5)
    m3.load_state_dict(m.state_dict())
    z = m.z_index[train.z]
    assert torch.equal(m3.node_prior(train, z), m.node_prior(train, z))


def test_partitioned_equals_full_with_prior():
    cut = 2.5  # below half the 5.1 A cell width, as the partitioner requires
    data = _data(2, (4, 1, 1), cut)
    m = _model(cutoff=cut, node_prior=True)
    m.prepare([data])
    full = m(data)
    parts = partition_for_model(data, m, "slices", n_parts=3)
    node, edge = scatter_predictions(parts, [m(p) for p in parts], data)
    assert torch.allclose(node, full.node_blocks, atol=1e-11)
    assert torch.allclose(edge, full.edge_blocks, atol=1e-11)


def test_balanced_loss_is_the_weighted_mean_of_node_and_edge_mse(hfo2):
    m = _model(node_loss_weight=0.25)
    pred = m(hfo2)
    sums, counts = m.loss_terms(pred, hfo2)
    nm, em = block_masks(hfo2)
    en, ee = (pred.node_blocks - hfo2.y_node)[nm], (pred.edge_blocks - hfo2.y_edge)[em]
    assert counts.tolist() == [en.numel(), ee.numel()]
    want = 0.25 * en.pow(2).mean() + 0.75 * ee.pow(2).mean()
    assert torch.allclose(m.loss_outer(sums / counts), want, rtol=1e-12)
    # virtual (unlabelled) blocks do not count
    d = hfo2.clone()
    d.node_label_mask = hfo2.node_label_mask.clone()
    d.node_label_mask[:3] = False
    _, c2 = m.loss_terms(m(d), d)
    assert c2[0] < counts[0] and c2[1] == counts[1]
    assert _model().loss_terms(pred, hfo2) is None  # default: the harness loss


def test_bad_node_options_are_config_errors():
    info = DatasetInfo(LAYOUT, CUT)
    for kw, msg in [(dict(node_loss_weight=1.0), "node_loss_weight"), (dict(node_prior="yes"), "node_prior"),
                    (dict(node_prior_rbf=0), "node_prior_rbf"), (dict(node_prior_ridge=-1.0), "node_prior_ridge")]:
        with pytest.raises(ConfigError, match=msg):
            ESCN(info, **kw)
