"""Model-owned losses: the trainer uses a backbone's `loss_terms` / `loss_outer`, and DDP stays exact
for a non-linear outer function."""

import os

import pytest
import torch

from tests.conftest import run_ranks
from tests.test_bench_trainer import _free_port, _graphs, _tiny_dataset
from zoo.bench.losses import label_masks
from zoo.bench.trainer import Trainer, TrainConfig
from zoo.data.torch_data import DatasetInfo, collate
from zoo.models.trivial.model import TrivialTwoCentre


class RootLoss(TrivialTwoCentre):
    """Owns a non-linear two-component loss (GEARS-H's form): sums and counts are vectors
    [on-site, off-site], f(m) = (m_on + 4 m_off)/5 + (sqrt(m_on) + 4 sqrt(m_off))/5."""

    def loss_terms(self, pred, batch):
        mn, me = label_masks(batch)
        en, ee = (pred.node_blocks - batch.y_node)[mn], (pred.edge_blocks - batch.y_edge)[me]
        s = torch.stack([(en * en).sum(), (ee * ee).sum()])
        return s, torch.tensor([float(en.numel()), float(ee.numel())], dtype=s.dtype, device=s.device)

    def loss_outer(self, m):
        return (m[0] + 4 * m[1]) / 5 + (torch.sqrt(m[0]) + 4 * torch.sqrt(m[1])) / 5


class NodeOnly(TrivialTwoCentre):
    """Owns a loss that ignores the edges: edge parameters must get no gradient."""

    def loss_terms(self, pred, batch):
        mn, _ = label_masks(batch)
        e = (pred.node_blocks - batch.y_node)[mn]
        return (e * e).sum(), torch.as_tensor(float(e.numel()), dtype=e.dtype)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_dataset(tmp_path_factory.mktemp("ds") / "tiny")


def _make(cls, ds, seed=0):
    torch.manual_seed(seed)
    m = cls(DatasetInfo.from_dataset(ds), n_radial=4)
    with torch.no_grad():
        m.onsite.normal_(0.0, 0.1)
    return m


CFG = dict(lr=0.01, max_epochs=2, batch_size=4, dtype="float64", grad_clip=None)


def test_model_loss_is_used(tiny):
    train, val = _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64)
    m = _make(RootLoss, tiny).double()
    batch = collate(train)
    with torch.no_grad():
        s, c = m.loss_terms(m(batch), batch)
    expect = float(m.loss_outer(s / c))
    r = Trainer(m, train, val, TrainConfig(**{**CFG, "max_epochs": 1}), quiet=True).fit()
    assert r.history[0]["train_loss"] == pytest.approx(expect, rel=1e-12)  # f(S/C) of the model, pre-step

    node_only = _make(NodeOnly, tiny)
    radial0, onsite0 = node_only.radial.detach().clone(), node_only.onsite.detach().clone()
    t = Trainer(node_only, train, val, TrainConfig(**CFG), quiet=True)
    t.fit()
    assert torch.equal(t.model.radial.detach(), radial0.double())  # edges ignored => no edge gradient
    assert not torch.equal(t.model.onsite.detach(), onsite0.double())
    harness = _make(TrivialTwoCentre, tiny)  # same model, harness loss: the edge weights do move
    t = Trainer(harness, train, val, TrainConfig(**CFG), quiet=True)
    t.fit()
    assert not torch.equal(t.model.radial.detach(), radial0.double())


def _ddp_worker(rank, world, port, ds_path, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1", ZOO_DIST_TIMEOUT_S="60",
                      GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    import faulthandler

    from zoo.bench import ddp
    from zoo.data.format import Dataset

    ds = Dataset.open(ds_path)
    ctx = ddp.setup(torch.device("cpu"))
    try:
        t = Trainer(_make(RootLoss, ds), _graphs(ds, "train", torch.float64), _graphs(ds, "val", torch.float64),
                    TrainConfig(**CFG), seed=5, ctx=ctx, quiet=True)
        faulthandler.dump_traceback_later(100, exit=True)  # a hang shows its stacks in the test output
        r = t.fit()
        if ctx.is_main:
            torch.save({"state": t.model.state_dict(), "history": r.history}, out)
    finally:
        ddp.teardown(ctx)


def test_ddp_equals_single_process_for_model_owned_nonlinear_loss(tiny, tmp_path):
    out = tmp_path / "ddp.pt"
    run_ranks(_ddp_worker, (_free_port(), str(tiny.path), str(out)))
    single = Trainer(_make(RootLoss, tiny), _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64),
                     TrainConfig(**CFG), seed=5, quiet=True)
    r = single.fit()
    got = torch.load(out, weights_only=False)
    start = _make(RootLoss, tiny).double().state_dict()
    moved, worst = 0.0, 0.0
    for k, v in single.model.state_dict().items():
        worst = max(worst, float((got["state"][k] - v).abs().max()))
        moved = max(moved, float((v - start[k]).abs().max()))
    print(f"DDP (2 gloo ranks) vs single process, model-owned two-component f(m_on, m_off): max |dw| = {worst:.1e}")
    assert worst < 1e-10, worst
    assert moved > 1e-3  # the weights did train
    for a, b in zip(got["history"], r.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-10)
