"""Trainer: masked losses, exact resume, dataset-hash guard, NaN stop, DDP equivalence."""

import os
import socket

import numpy as np
import pytest
import torch

from tests.conftest import run_ranks
from zoo.bench.losses import LossSpec, loss_value, masked_sums
from zoo.bench.trainer import Trainer, TrainConfig, load_checkpoint
from zoo.errors import ConfigError, ZooError


def _tiny_dataset(path, n_train=4):
    from ase.build import bulk

    from zoo.data.format import DatasetWriter, Structure
    from zoo.data.synthetic import toy_record
    from zoo.physics.basis import get_basis

    basis = get_basis("szv-molopt-sr").subset([8, 72])
    with DatasetWriter(path, "tiny", basis, 3.3, {"method": "toy", "code": "zoo.synthetic"}) as w:
        names = []
        for k in range(n_train + 2):
            at = bulk("MgO", "rocksalt", a=4.4).repeat((2, 2, 2))
            at.numbers[at.numbers == 12] = 72
            at.rattle(0.1, seed=k)
            w.add(toy_record(Structure.from_ase(at), basis, 3.3, name=f"s{k}"))
            names.append(f"s{k}")
        return w.finalize({"train": names[:n_train], "val": [names[n_train]], "test": [names[n_train + 1]]})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_dataset(tmp_path_factory.mktemp("ds") / "tiny")


def _graphs(ds, split, dtype=torch.float32):
    from zoo.data.torch_data import record_to_data

    return [record_to_data(r, ds.layout(), dtype) for r in ds.records(split)]


def _model(ds, seed=0):
    from zoo.data.torch_data import DatasetInfo
    from zoo.models.registry import build_model

    torch.manual_seed(seed)
    return build_model("sk", DatasetInfo.from_dataset(ds), n_radial=4)


def test_losses_hand_values_and_masks():
    from torch_geometric.data import Data

    n = 2
    d = Data(node_orb_mask=torch.tensor([[True, False], [True, True]]), edge_index=torch.tensor([[0], [1]]),
             node_label_mask=torch.tensor([True, False]), edge_label_mask=torch.tensor([True]),
             y_node=torch.zeros(2, n, n), y_edge=torch.zeros(1, n, n), num_nodes=2)

    class P:
        node_blocks = torch.full((2, n, n), 3.0)  # node 1 is virtual, node 0 has 1 real orbital
        edge_blocks = torch.tensor([[[1.0, 2.0], [5.0, 7.0]]])  # edge 0->1: mask row 0 only -> (1, 2)

    s, c = masked_sums(LossSpec("mse"), P, d)
    assert c.item() == 3 and s.item() == pytest.approx(9 + 1 + 4)
    assert loss_value(LossSpec("mse"), P, d).item() == pytest.approx(14 / 3)
    assert loss_value(LossSpec("mse_rmse"), P, d).item() == pytest.approx(14 / 3 + (14 / 3) ** 0.5)
    w = loss_value(LossSpec("mse", offdiag_weight=2.0), P, d).item()
    assert w == pytest.approx((9 + 2 * 5) / 5)
    f = loss_value(LossSpec("focal", focal_beta=1.0, focal_gamma=1.0), P, d).item()
    g = lambda e: e * e * (2 / (1 + np.exp(-e)) - 1)
    assert f == pytest.approx((g(3.0) + g(1.0) + g(2.0)) / 3, rel=1e-6)
    with pytest.raises(ConfigError, match="unknown training key"):
        TrainConfig.from_dict({"lr": 1e-3, "learning_rate": 1})
    with pytest.raises(ConfigError, match="unknown loss"):
        TrainConfig.from_dict({"loss": "l7"})


def test_resume_reproduces_uninterrupted_run(tiny, tmp_path):
    cfg = dict(lr=0.01, max_epochs=5, patience=1, batch_size=2, dtype="float64")
    train, val = _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64)
    full = Trainer(_model(tiny), train, val, TrainConfig(**cfg), seed=3, run_dir=tmp_path / "a", card_hash="h",
                   quiet=True)
    ra = full.fit()
    part = Trainer(_model(tiny), train, val, TrainConfig(**{**cfg, "max_epochs": 2}), seed=3, run_dir=tmp_path / "b",
                   card_hash="h", quiet=True)
    part.fit()
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    resumed = Trainer(_model(tiny, seed=99), train, val, TrainConfig(**cfg), seed=3, run_dir=tmp_path / "b",
                      card_hash="h", quiet=True)
    rb = resumed.fit(resume=True)
    assert ra.epochs_run == rb.epochs_run == 5
    assert [h["train_loss"] for h in ra.history] == [h["train_loss"] for h in rb.history]
    assert [h["lr"] for h in ra.history] == [h["lr"] for h in rb.history]
    assert ra.history[-1]["val_loss"] == rb.history[-1]["val_loss"]
    assert ra.history[-1]["train_loss"] < ra.history[0]["train_loss"]
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])
    other = Trainer(_model(tiny), train, val, TrainConfig(**cfg), seed=3, run_dir=tmp_path / "b", card_hash="other",
                    quiet=True)
    with pytest.raises(ZooError, match="refusing to resume on a different dataset"):
        other.fit(resume=True)


def test_min_lr_stop_and_budget(tiny):
    train, val = _graphs(tiny, "train"), _graphs(tiny, "val")
    cfg = TrainConfig(lr=1e-3, min_lr=2e-4, lr_decay=0.5, patience=0, threshold=10.0, max_epochs=50)
    r = Trainer(_model(tiny), train, val, cfg, quiet=True).fit()  # threshold 10 => every epoch is "no better"
    assert r.stop_reason == "min_lr" and r.epochs_run == 3  # 1e-3 -> 5e-4 -> 2.5e-4 -> 1.25e-4 < 2e-4
    r = Trainer(_model(tiny), train, val, TrainConfig(max_epochs=10**9, time_budget_min=1e-4), quiet=True).fit()
    assert r.stop_reason == "time_budget" and r.epochs_run >= 1


def test_nan_loss_stops_with_the_step_named(tiny):
    m = _model(tiny)
    with torch.no_grad():
        m.bond.fill_(float("nan"))
    t = Trainer(m, _graphs(tiny, "train"), _graphs(tiny, "val"), TrainConfig(max_epochs=3), quiet=True)
    with pytest.raises(ZooError, match=r"non-finite training loss .* epoch 1, step 1"):
        t.fit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, ds_path, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1", ZOO_DIST_TIMEOUT_S="60",
                      GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    import faulthandler
    import gc

    from torch.nn.parallel import DistributedDataParallel

    from zoo.bench import ddp
    from zoo.data.format import Dataset

    ds = Dataset.open(ds_path)
    ctx = ddp.setup(torch.device("cpu"))
    try:
        cfg = TrainConfig(lr=0.01, max_epochs=2, batch_size=4, dtype="float64", grad_clip=None)
        t = Trainer(_model(ds), _graphs(ds, "train", torch.float64), _graphs(ds, "val", torch.float64), cfg, seed=5,
                    ctx=ctx, quiet=True)
        faulthandler.dump_traceback_later(100, exit=True)  # a hang shows its stacks in the test output
        r = t.fit()
        # fit() frees its DDP wrapper while the group is alive (a reducer freed after
        # destroy_process_group can deadlock on the GIL, as rank 0 once did in CI)
        assert not any(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
        if ctx.is_main:
            torch.save({"state": t.model.state_dict(), "history": r.history}, out)
    finally:
        ddp.teardown(ctx)


def test_ddp_two_ranks_equal_single_process(tiny, tmp_path):
    out = tmp_path / "ddp.pt"
    run_ranks(_ddp_worker, (_free_port(), str(tiny.path), str(out)))
    cfg = TrainConfig(lr=0.01, max_epochs=2, batch_size=4, dtype="float64", grad_clip=None)
    single = Trainer(_model(tiny), _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64), cfg,
                     seed=5, quiet=True)
    r = single.fit()
    got = torch.load(out, weights_only=False)
    moved = 0.0
    start = _model(tiny).double().state_dict()
    for k, v in single.model.state_dict().items():
        assert torch.allclose(got["state"][k], v, rtol=1e-9, atol=1e-12), k
        moved = max(moved, float((v - start[k]).abs().max()))
    assert moved > 1e-3  # the weights did train
    assert got["history"][-1]["val_loss"] == pytest.approx(r.history[-1]["val_loss"], rel=1e-9)
