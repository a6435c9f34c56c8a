"""Per-element invariant on-site means on spinful data (#15): the `mean` baseline's kron(I2, M_Z) and
hamgnn's `onsite_prior`, which adds the same fit (one copy, `zoo.models.mean.invariant`) under the network."""

import numpy as np
import torch

from tests.conftest import tiny_hfo2
from zoo.bench.run import build_config, hparam_hash
from zoo.data.format import Structure
from zoo.data.synthetic import toy_spinful_record
from zoo.data.torch_data import DatasetInfo, block_masks, record_to_data
from zoo.models import build_model
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.spin import spinful_wigner, time_reverse
from zoo.physics.wigner import random_rotation

BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [8, 72])
CUTOFF = 4.0
INFO = DatasetInfo(LAYOUT, CUTOFF, spinful=True, name="prior-soc")
SMALL = dict(num_features=2, num_layers=1, radial_hidden=8)


def spinful(seeds=(0, 1, 2), offset: float = 0.0):
    """(record, graph) pairs; `offset` Ha is added to every on-site diagonal (a core-level-like constant)."""
    out = []
    for s in seeds:
        rec = toy_spinful_record(Structure.from_ase(tiny_hfo2(s, reps=(1, 1, 1))), BASIS, CUTOFF,
                                 overlap=False, name=f"s{s}", seed=s)
        d = record_to_data(rec, LAYOUT, dtype=torch.float64)
        nm, _ = block_masks(d)
        eye = torch.diag_embed(nm.diagonal(dim1=1, dim2=2).to(d.y_node.dtype))
        d.y_node = d.y_node + offset * eye
        out.append((rec, d))
    return out


def hand_onsite(recs, z: int) -> np.ndarray:
    """Mean over the training atoms of element z of the shell-pair L = 0 parts of Re (uu + dd) / 2."""
    shells = BASIS.element_shells(z)
    offs = np.concatenate([[0], np.cumsum([2 * l + 1 for l in shells])])
    n = int(offs[-1])
    blocks = [b for rec in recs for zz, b in zip(rec.numbers, rec.onsite_blocks()) if zz == z]
    mean = np.zeros((n, n))
    for b in blocks:
        b0 = 0.5 * (b[:n, :n] + b[n:, n:]).real
        for a, la in enumerate(shells):
            for c, lc in enumerate(shells):
                if la == lc:
                    sub = b0[offs[a]:offs[a + 1], offs[c]:offs[c + 1]]
                    mean[offs[a]:offs[a + 1], offs[c]:offs[c + 1]] += np.trace(sub) / (2 * la + 1) * np.eye(2 * la + 1)
    return mean / len(blocks)


def test_spinful_mean_is_kron_identity_of_the_hand_computed_average():
    train = spinful()
    model = build_model("mean", INFO).double()
    model.prepare([d for _, d in train])
    assert model.spinful and {int(z): int(n) for z, n in zip(LAYOUT.elements, model.n_fitted)} == {8: 24, 72: 12}
    _, d = spinful((7,))[0]
    with torch.no_grad():
        p = model(d)
    assert p.node_blocks.dtype == torch.complex128 and torch.equal(p.edge_blocks, torch.zeros_like(p.edge_blocks))
    h = LAYOUT.n_max
    for z, block in zip(d.z.tolist(), p.node_blocks.numpy()):
        idx = np.asarray(LAYOUT.index[z])
        want = np.kron(np.eye(2), hand_onsite([r for r, _ in train], z))
        np.testing.assert_allclose(block[np.ix_(np.r_[idx, idx + h], np.r_[idx, idx + h])], want, atol=1e-12)


def _symmetry_errors(model, d) -> tuple[float, float, float]:
    """Relative (hermiticity, time-reversal, SU(2) proper + improper) errors of the on-site output."""
    with torch.no_grad():
        p = model(d).node_blocks
        nm, _ = block_masks(d)
        scale = float(p[nm].abs().max())
        herm = float((p - p.conj().transpose(-1, -2))[nm].abs().max()) / scale
        tr = float((time_reverse(p) - p)[nm].abs().max()) / scale
        su2 = 0.0
        for improper in (False, True):
            R = random_rotation(5, improper=improper)
            dr = d.clone()
            dr.pos, dr.cell = d.pos @ R.T, d.cell @ R.T
            D = spinful_wigner(LAYOUT.slot_ls, R)
            su2 = max(su2, float((D @ p @ D.conj().T - model(dr).node_blocks)[nm].abs().max()) / scale)
    return herm, tr, su2


def test_spinful_mean_is_hermitian_time_reversal_even_and_su2_covariant():
    model = build_model("mean", INFO).double()
    model.prepare([d for _, d in spinful()])
    assert max(_symmetry_errors(model, spinful((4,))[0][1])) < 1e-12


def onsite_mae(model, d) -> float:
    with torch.no_grad():
        p = model(d).node_blocks
    nm, _ = block_masks(d)
    return float((p - d.y_node)[nm].abs().mean())


def test_hamgnn_soc_onsite_prior_removes_a_constant_offset(soc_head="so3"):
    # (the prior sits under the spin-independent output, so soc_head su2 shares this path)
    train = [d for _, d in spinful((0, 1), offset=-100.0)]
    test = spinful((5,), offset=-100.0)[0][1]
    hp = dict(SMALL, soc_head=soc_head, lmax=5 if soc_head == "su2" else 4)
    torch.manual_seed(0)
    plain = build_model("hamgnn-soc", INFO, **hp).double()
    torch.manual_seed(0)
    prior = build_model("hamgnn-soc", INFO, onsite_prior=True, **hp).double()
    prior.prepare(train)
    bare, fitted = onsite_mae(plain, test), onsite_mae(prior, test)
    print(f"\nhamgnn-soc {soc_head}: untrained on-site MAE {bare:.3g} Ha without the prior, {fitted:.3g} with it")
    assert fitted < 0.05 * bare
    herm, tr, su2 = _symmetry_errors(prior, test)
    assert herm < 1e-12 and tr < 1e-12 and su2 < 1e-10, (herm, tr, su2)
    # the fitted means travel in the state_dict (checkpoints, zoo predict)
    again = build_model("hamgnn-soc", INFO, onsite_prior=True, **hp).double()
    again.load_state_dict(prior.state_dict())
    torch.testing.assert_close(again(test).node_blocks, prior(test).node_blocks)


def test_spinless_hamgnn_prior_is_the_mean_baseline_under_an_untrained_network():
    from zoo.data.synthetic import toy_record

    info = DatasetInfo(LAYOUT, CUTOFF, name="prior")
    graphs = [record_to_data(toy_record(Structure.from_ase(tiny_hfo2(s, reps=(1, 1, 1))), BASIS, CUTOFF,
                                        overlap=False), LAYOUT, dtype=torch.float64) for s in (0,)]
    mean = build_model("mean", info).double()
    mean.prepare(graphs)
    model = build_model("hamgnn", info, onsite_prior=True, **SMALL).double()
    model.prepare(graphs)
    torch.testing.assert_close(model.prior.means, mean.means.detach())
    assert torch.equal(model.prior.n_fitted, mean.n_fitted)


def test_the_default_key_leaves_preset_hashes_alone():
    # the cpu preset's hash at the commit before onsite_prior existed: the key is absent from presets at its default
    hp, cfg = build_config("hamgnn", "cpu")
    assert "onsite_prior" not in hp and hparam_hash("hamgnn", hp, cfg) == "5041f4d77639"
    hp_on, cfg_on = build_config("hamgnn-soc", "cpu", ["onsite_prior=true"])
    assert hp_on["onsite_prior"] is True and hparam_hash("hamgnn-soc", hp_on, cfg_on) != hparam_hash("hamgnn-soc", *build_config("hamgnn-soc", "cpu"))
