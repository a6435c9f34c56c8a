"""Target standardization: statistics from the data, exact equivariance and hermiticity, the loss
in standardized units, and refusal of spinful data."""

import numpy as np
import pytest
import torch

from tests.conftest import write_toy_dataset
from zoo.bench.losses import LossSpec, label_masks, masked_sums
from zoo.bench.standardize import Standardized, for_checkpoint
from zoo.bench.trainer import Trainer, TrainConfig
from zoo.data.format import Dataset
from zoo.data.torch_data import DatasetInfo, record_to_data
from zoo.errors import ConfigError
from zoo.models.contract import Backbone, Prediction, reverse_edges, symmetrize_prediction
from zoo.models.registry import build_model


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return Dataset.open(write_toy_dataset(tmp_path_factory.mktemp("std") / "toy", n=4, cutoff=3.5))


def _graphs(ds, split):
    return [record_to_data(r, ds.layout(), torch.float64) for r in ds.records(split)]


def _backbone(ds, seed=0):
    torch.manual_seed(seed)
    m = build_model("trivial", DatasetInfo.from_dataset(ds), n_radial=4).double()
    with torch.no_grad():  # on-site coefficients away from zero, so the shift and scale both matter
        m.onsite.normal_()
    return m


def test_statistics_are_the_training_mean_and_rms(toy):
    train = _graphs(toy, "train")
    std = Standardized(_backbone(toy)).double()
    std.prepare(train)
    layout = toy.layout()
    we = std.we
    for z in layout.elements:
        e = int(std.z_index[z])
        # the first s slot pair of an element: its only coupled component is the matrix entry itself
        a = layout.slots_of[z][0]
        assert layout.slot_ls[a] == 0
        k = we.pair_slices[(a, a)].start
        o = layout.slot_offsets[a]
        vals = np.concatenate([g.y_node[g.z == z][:, o, o].numpy() for g in train])
        assert std.node_shift[e, k].item() == pytest.approx(vals.mean(), rel=1e-12)
        assert std.node_scale[e, k].item() == pytest.approx(vals.std(), rel=1e-10)
        assert vals.std() > 1e-6  # the test data is not degenerate
    # off-site: no shift; an s-s irrep's scale is the RMS of that entry over the ordered pair's edges
    zo, zh = 8, 72
    a, b = layout.slots_of[zo][0], layout.slots_of[zh][0]
    oa, ob = layout.slot_offsets[a], layout.slot_offsets[b]
    v = []
    for g in train:
        i, j = g.edge_index
        v.append(g.y_edge[(g.z[i] == zo) & (g.z[j] == zh)][:, oa, ob].numpy())
        v.append(g.y_edge[(g.z[i] == zh) & (g.z[j] == zo)][:, ob, oa].numpy())  # pooled with the transpose
    v = np.concatenate(v)
    k = we.pair_slices[(a, b)].start
    assert std.edge_scale[std.z_index[zo], std.z_index[zh], k].item() == pytest.approx(np.sqrt(np.mean(v ** 2)),
                                                                                      rel=1e-10)
    assert torch.all(std.node_shift[:, ~std.comp_is_scalar] == 0)  # L > 0 is never shifted


def test_standardized_model_is_exactly_equivariant(toy):
    from zoo.bench.metrics import rotate_graph
    from zoo.physics.wigner import random_rotation, wigner_D_shells

    std = Standardized(_backbone(toy)).double()
    std.prepare(_graphs(toy, "train"))
    assert not torch.allclose(std.node_scale, torch.ones_like(std.node_scale))
    g = _graphs(toy, "test")[0]
    for seed, improper in ((1, False), (2, True)):
        R = random_rotation(seed).double()
        if improper:
            R = -R  # inversion as well: parity acts through the layout's D
        p, q = std(g), std(rotate_graph(g, R))
        D = wigner_D_shells(toy.layout().slot_ls, R).double()
        mn, me = label_masks(g)
        dn = (D @ p.node_blocks @ D.T - q.node_blocks)[mn].abs().max().item()
        de = (D @ p.edge_blocks @ D.T - q.edge_blocks)[me].abs().max().item()
        assert max(dn, de) < 1e-10, (seed, dn, de)
        assert p.node_blocks[mn].abs().max() > 1e-3  # a non-trivial output


def test_hermitian_backbone_stays_hermitian(toy):
    class Herm(Backbone):
        hermitian = True

        def __init__(self, inner):
            super().__init__(inner.info)
            self.inner = inner

        def forward(self, batch):
            return symmetrize_prediction(self.inner(batch), batch)

    std = Standardized(Herm(_backbone(toy))).double()
    std.prepare(_graphs(toy, "train"))
    assert std.hermitian
    g = _graphs(toy, "test")[0]
    p = std(g)
    n = (p.node_blocks - p.node_blocks.transpose(1, 2)).abs().max().item()
    rev = reverse_edges(g.edge_index, g.edge_shift, g.num_nodes)
    assert (rev >= 0).all()
    e = (p.edge_blocks - p.edge_blocks[rev].transpose(1, 2)).abs().max().item()
    assert max(n, e) < 1e-12


def test_loss_is_computed_in_standardized_units(toy):
    train = _graphs(toy, "train")
    cfg = TrainConfig(standardize=True, dtype="float64", max_epochs=1)
    t = Trainer(_backbone(toy), train, [], cfg, quiet=True)
    assert isinstance(t.model, Standardized)
    t.model.prepare(train)
    g = train[0]
    # a prediction off by delta in one on-site L=0 irrep of one atom: loss = (delta / scale)^2 / count
    layout = toy.layout()
    z0 = int(g.z[0])
    a = layout.slots_of[z0][0]
    o = layout.slot_offsets[a]
    delta = 0.01
    yn = g.y_node.clone()
    yn[0, o, o] += delta
    pred = Prediction(yn, g.y_edge.clone())
    s, c, owned = t._main_sums(pred, g)
    assert not owned
    k = t.model.we.pair_slices[(a, a)].start
    scale = t.model.node_scale[t.model.z_index[z0], k].item()
    _, c_phys = masked_sums(LossSpec("mse"), pred, g)
    assert c.item() == c_phys.item()  # same entries counted
    assert s.item() == pytest.approx((delta / scale) ** 2, rel=1e-9)
    assert abs(scale - 1.0) > 0.1  # so physical units would give a different number
    # an exact prediction costs nothing: the shift cancels
    s0, _, _ = t._main_sums(Prediction(g.y_node, g.y_edge), g)
    assert s0.item() < 1e-20


def test_checkpoint_carries_statistics_and_spinful_is_refused(toy):
    std = Standardized(_backbone(toy)).double()
    std.prepare(_graphs(toy, "train"))
    other = for_checkpoint(_backbone(toy), {"standardize": True}).double()  # how a checkpoint is reloaded
    other.load_state_dict(std.state_dict())
    assert torch.equal(other.node_scale, std.node_scale) and torch.equal(other.edge_scale, std.edge_scale)
    g = _graphs(toy, "test")[0]
    assert torch.equal(other(g).node_blocks, std(g).node_blocks)
    info = DatasetInfo.from_dataset(toy)
    info.spinful = True

    class Spinful(Backbone):
        spinful = True

        def forward(self, batch):
            raise AssertionError("never called")

    with pytest.raises(ConfigError, match="spinless data only"):
        Standardized(Spinful(info))


def test_trainer_fits_statistics_once_and_resume_restores_them(toy, tmp_path):
    train, val = _graphs(toy, "train"), _graphs(toy, "val")
    cfg = dict(standardize=True, dtype="float64", max_epochs=1, lr=0.01)
    t = Trainer(_backbone(toy), train, val, TrainConfig(**cfg), run_dir=tmp_path, card_hash="h", quiet=True)
    t.fit()  # a fresh run calls prepare, which fits the statistics
    fitted = t.model.node_scale.clone()
    assert not torch.allclose(fitted, torch.ones_like(fitted))
    again = Trainer(_backbone(toy), train, val, TrainConfig(**{**cfg, "max_epochs": 2}), run_dir=tmp_path,
                    card_hash="h", quiet=True)
    again.fit(resume=True)
    assert torch.equal(again.model.node_scale, fitted) and torch.equal(again.model.edge_scale, t.model.edge_scale)


def test_bench_then_predict_with_standardized_targets(toy_dataset, tmp_path):
    """A standardized run's checkpoint loads in `zoo predict`, which writes physical (un-standardized) H."""
    from zoo.bench.predict import model_from_checkpoint
    from zoo.cli.main import main

    runs = tmp_path / "runs"
    assert main(["bench", "--model", "sk", "--dataset", str(toy_dataset), "--max-epochs", "2", "--quiet",
                 "--set", "standardize=true", "--leaderboard-dir", str(tmp_path / "lb"), "--runs-dir", str(runs)]) == 0
    (run_dir,) = list((runs / "toy-hfo2").iterdir())
    model, info, dtype = model_from_checkpoint(run_dir / "checkpoint.pt")
    assert isinstance(model, Standardized)
    rec = Dataset.open(toy_dataset).read("s2")
    rec.structure.to_ase().write(tmp_path / "s2.xyz", format="extxyz")
    assert main(["predict", str(run_dir / "checkpoint.pt"), str(tmp_path / "s2.xyz"), "-o", str(tmp_path / "H.npz")]) == 0
    h = np.load(tmp_path / "H.npz")
    data = record_to_data(rec, info.layout, dtype)
    with torch.no_grad():
        p = model(data)
    # on-site blocks of the written file are the wrapper's physical output (hermitized; sk is hermitian)
    from zoo.physics.assembly import unpad_blocks

    on = unpad_blocks(p.node_blocks.double().numpy(), info.layout.index, rec.numbers, rec.numbers)
    np.testing.assert_allclose(h["h_onsite"], on, atol=1e-5)
    assert np.abs(on).max() > 0.05  # physical scale (Hartree), not standardized units
