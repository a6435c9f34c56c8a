"""The `mean` calibration baseline: the fitted means are the per-element averages of the invariant
(L = 0) part of the labelled training on-site blocks, off-site is zero, and training leaves them put."""

import numpy as np
import pytest
import torch

from tests.conftest import tiny_hfo2, write_toy_dataset
from zoo.data.format import Dataset, Structure
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import DatasetInfo, block_masks, record_to_data
from zoo.models import build_model
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.wigner import random_rotation

BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [8, 72])
INFO = DatasetInfo(LAYOUT, 4.0, name="mean-test")


def graphs(seeds=(0, 1, 2)):
    out = []
    for s in seeds:
        rec = toy_record(Structure.from_ase(tiny_hfo2(s, reps=(1, 1, 1))), BASIS, 4.0, overlap=False, name=f"g{s}")
        out.append((rec, record_to_data(rec, LAYOUT, dtype=torch.float64)))
    return out


def hand_means(recs):
    """{(Z, shell a, shell b): mean over atoms of tr(B_ab) / (2l+1)} for l_a = l_b, from the raw records."""
    acc: dict = {}
    for rec in recs:
        for z, block in zip(rec.numbers, rec.onsite_blocks()):
            shells = BASIS.element_shells(int(z))
            offs = np.concatenate([[0], np.cumsum([2 * l + 1 for l in shells])])
            for a, la in enumerate(shells):
                for b, lb in enumerate(shells):
                    if la == lb:
                        sub = block[offs[a]:offs[a + 1], offs[b]:offs[b + 1]]
                        acc.setdefault((int(z), a, b), []).append(np.trace(sub) / (2 * la + 1))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def test_prepare_fits_the_per_element_invariant_means():
    data = graphs()
    model = build_model("mean", INFO).double()
    model.prepare([d for _, d in data])
    expect = hand_means([r for r, _ in data])
    rec, d = graphs((7,))[0]  # an unseen structure: on-site blocks depend only on the element
    with torch.no_grad():
        p = model(d)
    for a_idx, (z, block) in enumerate(zip(rec.numbers, p.node_blocks.numpy())):
        shells = BASIS.element_shells(int(z))
        n = sum(2 * l + 1 for l in shells)
        want = np.zeros((n, n))
        offs = np.concatenate([[0], np.cumsum([2 * l + 1 for l in shells])])
        for a, la in enumerate(shells):
            for b, lb in enumerate(shells):
                if la == lb:
                    want[offs[a]:offs[a + 1], offs[b]:offs[b + 1]] = expect[(int(z), a, b)] * np.eye(2 * la + 1)
        idx = LAYOUT.index[int(z)]  # the atom's real orbitals inside the padded block
        np.testing.assert_allclose(block[np.ix_(idx, idx)], want, atol=1e-12)
    assert torch.equal(p.edge_blocks, torch.zeros_like(p.edge_blocks))
    counts = {int(z): int(n) for z, n in zip(LAYOUT.elements, model.n_fitted)}
    assert counts == {8: 24, 72: 12}


def test_means_are_rotation_invariant_and_skip_virtual_atoms():
    data = [d for _, d in graphs()]
    ref = build_model("mean", INFO).double()
    ref.prepare(data)
    R = random_rotation(3, improper=True)
    # targets of a rotated structure are D B D^T: the invariant part (hence the fit) must not change
    from zoo.physics.wigner import wigner_D_shells

    D = wigner_D_shells(LAYOUT.slot_ls, R).double()
    rot = []
    for d in data:
        e = d.clone()
        e.pos, e.cell = d.pos @ R.T, d.cell @ R.T
        e.y_node = D @ d.y_node @ D.T
        rot.append(e)
    m2 = build_model("mean", INFO).double()
    m2.prepare(rot)
    torch.testing.assert_close(m2.means, ref.means, atol=1e-12, rtol=0)
    # a virtual (halo) atom is not a label: garbage on it must not enter the means
    bad = data[0].clone()
    bad.y_node = bad.y_node.clone()
    bad.y_node[0] += 100.0
    bad.node_label_mask = bad.node_label_mask.clone()
    bad.node_label_mask[0] = False
    m3 = build_model("mean", INFO).double()
    m3.prepare([bad] + data[1:])
    assert int(m3.n_fitted.sum()) == int(ref.n_fitted.sum()) - 1
    assert m3.means.abs().max() < 10.0


def test_means_are_the_least_squares_optimum():
    """Nudging any fitted mean raises the on-site squared error over the training set (no-op training)."""
    data = [d for _, d in graphs()]
    model = build_model("mean", INFO).double()
    model.prepare(data)

    def node_sse(m):
        s = 0.0
        for d in data:
            nm, _ = block_masks(d)
            s += float(((m(d).node_blocks - d.y_node)[nm] ** 2).sum())
        return s

    with torch.no_grad():
        base = node_sse(model)
        tried = 0
        for e, z in enumerate(LAYOUT.elements):
            real = model.we.pair_mask(z, z)[model.scalar_idx]  # scalars of shells element z really has
            for k in torch.nonzero(real).flatten().tolist():
                for step in (1e-3, -1e-3):
                    model.means[e, k] += step
                    assert node_sse(model) > base * (1 + 1e-9), (z, k, step)
                    model.means[e, k] -= step
                    tried += 1
        assert tried >= 2 * 5  # O: s, p (2 scalars; szv has one shell per l); Hf: s, p, d ... at least


def test_untrained_mean_is_zero_and_harness_training_keeps_the_fit(tmp_path):
    from zoo.bench.run import build_config
    from zoo.bench.trainer import Trainer

    ds = Dataset.open(write_toy_dataset(tmp_path / "toy"))
    info = DatasetInfo.from_dataset(ds)
    hp, cfg = build_config("mean", "cpu")
    assert cfg.max_epochs <= 5  # the baseline costs seconds in `zoo bench`
    model = build_model("mean", info, **hp).double()
    train = [record_to_data(r, info.layout, torch.float64) for r in ds.records("train")]
    val = [record_to_data(r, info.layout, torch.float64) for r in ds.records("val")]
    with torch.no_grad():
        assert model(train[0]).node_blocks.abs().max() == 0  # nothing is known before prepare
    model.prepare(train)
    fitted = model.means.detach().clone()
    Trainer(model, train, val, cfg, quiet=True, device=torch.device("cpu")).fit()
    assert (model.means.detach() - fitted).abs().max() < 1e-4 * fitted.abs().max()


def test_zoo_bench_runs_the_mean_baseline(tmp_path):
    from zoo.bench.leaderboard import read_rows
    from zoo.cli.main import main

    ds = Dataset.open(write_toy_dataset(tmp_path / "toy"))
    lb = tmp_path / "lb"
    assert main(["bench", "--model", "mean", "--dataset", str(ds.path), "--leaderboard-dir", str(lb),
                 "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    (row,) = read_rows(lb / f"{ds.name}.csv")[1]
    # off-site zero: the edge MAE is the mean |H_ij| of the test blocks
    rec = ds.read(ds.split("test")[0])
    mean_abs = np.mean(np.concatenate([np.abs(b).reshape(-1) for b in rec.edge_blocks()]))
    from zoo.physics.units import MEV_PER_HARTREE

    assert float(row["edge_mae_mev"]) == pytest.approx(mean_abs * MEV_PER_HARTREE, rel=1e-9)
    info = DatasetInfo.from_dataset(ds)
    model = build_model("mean", info).double()
    model.prepare([record_to_data(r, info.layout, torch.float64) for r in ds.records("train")])
    d = record_to_data(rec, info.layout, torch.float64)
    nm, _ = block_masks(d)
    with torch.no_grad():
        node_mae = float((model(d).node_blocks - d.y_node)[nm].abs().mean()) * MEV_PER_HARTREE
    assert float(row["node_mae_mev"]) == pytest.approx(node_mae, rel=1e-6)
