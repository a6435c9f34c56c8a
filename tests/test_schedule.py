"""The budget-sized cosine schedule: its values, a run's lr history, exact resume, bad configurations."""

from __future__ import annotations

import math

import pytest
import torch

from tests.test_bench_trainer import _graphs, _model, _tiny_dataset
from zoo.bench.schedule import BudgetCosine
from zoo.bench.trainer import Trainer, TrainConfig
from zoo.errors import ConfigError, ZooError


def test_cosine_values_and_clamping():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.Adam(p, lr=1.0)
    s = BudgetCosine(opt, lr=1e-2, min_lr=1e-4)
    for f, want in [(0.0, 1e-2), (0.5, 1e-4 + 0.5 * (1e-2 - 1e-4)), (1.0, 1e-4), (1.7, 1e-4), (-0.2, 1e-2),
                    (0.25, 1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + math.cos(math.pi / 4)))]:
        s.step(f)
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-12)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_dataset(tmp_path_factory.mktemp("ds") / "tiny")


def test_run_anneals_to_min_lr_at_the_epoch_budget_and_resumes_exactly(tiny, tmp_path):
    cfg = dict(lr=0.02, min_lr=1e-4, max_epochs=6, patience=0, batch_size=2, dtype="float64", schedule="cosine")
    train, val = _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64)
    full = Trainer(_model(tiny), train, val, TrainConfig(**cfg), seed=1, run_dir=tmp_path / "a", card_hash="h",
                   quiet=True)
    ra = full.fit()
    # patience 0 would halve a plateau schedule's lr at once; the cosine ignores the monitor
    lrs = [h["lr"] for h in ra.history]
    want = [1e-4 + 0.5 * (0.02 - 1e-4) * (1 + math.cos(math.pi * e / 6)) for e in range(6)]
    assert lrs == pytest.approx(want, rel=1e-12) and ra.stop_reason == "max_epochs"
    assert full.opt.param_groups[0]["lr"] == pytest.approx(1e-4, rel=1e-12)  # min_lr when the budget ends
    Trainer(_model(tiny), train, val, TrainConfig(**{**cfg, "max_epochs": 6}), seed=1, run_dir=tmp_path / "b",
            card_hash="h", quiet=True).fit()
    wrong = Trainer(_model(tiny), train, val, TrainConfig(**{**cfg, "schedule": "plateau"}), seed=1,
                    run_dir=tmp_path / "b", card_hash="h", quiet=True)
    with pytest.raises(ZooError, match="trained with schedule 'cosine'"):
        wrong.fit(resume=True)


def test_resume_mid_run_is_exact(tiny, tmp_path):
    cfg = dict(lr=0.02, min_lr=1e-4, max_epochs=5, batch_size=2, dtype="float64", schedule="cosine")
    train, val = _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64)
    full = Trainer(_model(tiny), train, val, TrainConfig(**cfg), seed=2, run_dir=tmp_path / "a", card_hash="h",
                   quiet=True)
    ra = full.fit()
    # killed in its third epoch: the checkpoint holds epoch 2 of the same 5-epoch budget
    part = Trainer(_model(tiny), train, val, TrainConfig(**cfg), seed=2, run_dir=tmp_path / "b", card_hash="h",
                   quiet=True)
    step = part._step

    def killed(b, epoch, k):
        if epoch == 2:
            raise KeyboardInterrupt
        return step(b, epoch, k)

    part._step = killed
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    resumed = Trainer(_model(tiny, seed=7), train, val, TrainConfig(**cfg), seed=2, run_dir=tmp_path / "b",
                      card_hash="h", quiet=True)
    rb = resumed.fit(resume=True)
    assert [h["lr"] for h in rb.history] == [h["lr"] for h in ra.history]
    assert [h["train_loss"] for h in rb.history] == [h["train_loss"] for h in ra.history]
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])


def test_bad_schedules_are_config_errors():
    with pytest.raises(ConfigError, match="unknown schedule 'step'"):
        TrainConfig.from_dict({"schedule": "step"})
    with pytest.raises(ConfigError, match="cannot be combined with stages"):
        TrainConfig.from_dict({"schedule": "cosine", "stages": [{"epochs": 2}, {}]})
    assert "schedule" not in TrainConfig().to_dict()  # rows before the key keep their hashes
    assert TrainConfig.from_dict({"schedule": "cosine"}).to_dict()["schedule"] == "cosine"
