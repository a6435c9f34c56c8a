"""Adan (zoo.bench.optim) against hand-computed updates, and the trainer's optimizer choice."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from tests.test_bench_trainer import _graphs, _model, _tiny_dataset
from zoo.bench.optim import Adan
from zoo.bench.trainer import Trainer, TrainConfig, load_checkpoint
from zoo.errors import ConfigError, ZooError

C = np.array([1.0, 3.0, 0.5])
B = np.array([0.3, -1.0, 2.0])


def _grad(theta: np.ndarray) -> np.ndarray:
    """Gradient of f = 1/2 sum c theta^2 + b . theta."""
    return C * theta + B


def _step_torch(p: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    (0.5 * (torch.as_tensor(C) * p ** 2).sum() + (torch.as_tensor(B) * p).sum()).backward()
    opt.step()


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_first_two_steps_match_the_paper_formulas(wd):
    """Written in the PAPER's convention (beta' = 1 - beta: 0.02, 0.08, 0.01) with its m_0 = g_0,
    n_0 = g_0^2, v = 0 start for step 1 and the bias-corrected moments for step 2, where the
    gradient difference g_2 - g_1 first enters."""
    lr, eps = 0.05, 1e-8
    bp1, bp2, bp3 = 0.02, 0.08, 0.01
    th0 = np.array([0.7, -0.4, 1.5])
    p = torch.tensor(th0, requires_grad=True)
    opt = Adan([p], lr=lr, betas=(1 - bp1, 1 - bp2, 1 - bp3), eps=eps, weight_decay=wd)

    g1 = _grad(th0)
    th1 = (th0 - lr * g1 / (np.abs(g1) + eps)) / (1 + lr * wd)  # step 1: a sign step, then the decay
    _step_torch(p, opt)
    np.testing.assert_allclose(p.detach().numpy(), th1, rtol=0, atol=1e-14)

    g2 = _grad(th1)
    d = g2 - g1
    m = ((1 - bp1) * bp1 * g1 + bp1 * g2) / (1 - (1 - bp1) ** 2)
    v = bp2 * d / (1 - (1 - bp2) ** 2)
    n = ((1 - bp3) * bp3 * g1 ** 2 + bp3 * (g2 + (1 - bp2) * d) ** 2) / (1 - (1 - bp3) ** 2)
    th2 = (th1 - lr * (m + (1 - bp2) * v) / (np.sqrt(n) + eps)) / (1 + lr * wd)
    _step_torch(p, opt)
    np.testing.assert_allclose(p.detach().numpy(), th2, rtol=0, atol=1e-14)
    assert np.abs(th2 - th1).max() > 1e-3  # the steps are not trivially small


def test_minimises_rosenbrock_and_a_quadratic():
    # analytic gradients (no autograd): the loop stays cheap
    x = torch.tensor([-1.5, 2.0], dtype=torch.float64)
    opt = Adan([x], lr=2e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 300, 0.5)
    for _ in range(1500):
        u, w = float(x[0]), float(x[1])
        x.grad = torch.tensor([-2 * (1 - u) - 400 * u * (w - u * u), 200 * (w - u * u)], dtype=torch.float64)
        opt.step()
        sched.step()
    assert torch.allclose(x, torch.ones(2, dtype=torch.float64), atol=2e-2), x  # the minimiser (1, 1)
    p = torch.tensor([0.7, -0.4, 1.5], dtype=torch.float64)
    opt = Adan([p], lr=5e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 100, 0.5)
    for _ in range(600):
        p.grad = torch.as_tensor(_grad(p.numpy()))
        opt.step()
        sched.step()
    np.testing.assert_allclose(p.numpy(), -B / C, atol=1e-2)  # the minimiser


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _train(net, opt, steps, start):
    for k in range(start, start + steps):
        x = torch.randn(16, 4, generator=torch.Generator().manual_seed(k))
        opt.zero_grad()
        ((net(x) - x.sum(1, keepdim=True)) ** 2).mean().backward()
        opt.step()


def test_state_dict_round_trip_continues_bit_identically():
    a = _net(0)
    opt_a = Adan(a.parameters(), lr=1e-2, weight_decay=1e-3)
    _train(a, opt_a, 5, 0)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, buf)
    _train(a, opt_a, 5, 5)

    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    b = _net(1)
    b.load_state_dict(saved["model"])
    opt_b = Adan(b.parameters(), lr=0.5)  # hyper-parameters come back with the state
    opt_b.load_state_dict(saved["opt"])
    assert opt_b.param_groups[0]["lr"] == 1e-2 and opt_b.state[next(b.parameters())]["step"] == 5
    _train(b, opt_b, 5, 5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_matches_cpu():
    cpu = _net(0)
    gpu = _net(0).cuda()
    oc, og = Adan(cpu.parameters(), lr=1e-2, weight_decay=1e-3), Adan(gpu.parameters(), lr=1e-2, weight_decay=1e-3)
    x = torch.randn(16, 4)
    for net, opt, xx in ((cpu, oc, x), (gpu, og, x.cuda())):
        for _ in range(3):
            opt.zero_grad()
            net(xx).pow(2).mean().backward()
            opt.step()
    for pc, pg in zip(cpu.parameters(), gpu.parameters()):
        assert pg.device.type == "cuda" and torch.allclose(pc, pg.cpu(), atol=1e-5)


def test_bad_hyper_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="unknown optimizer 'sgd'"):
        TrainConfig.from_dict({"optimizer": "sgd"})
    with pytest.raises(ConfigError, match="betas for adan must be 3 numbers"):
        TrainConfig.from_dict({"optimizer": "adan", "betas": [0.9, 0.999]})
    with pytest.raises(ConfigError, match="betas for adamw must be 2 numbers"):
        TrainConfig.from_dict({"optimizer": "adamw", "betas": [0.98, 0.92, 0.99]})
    with pytest.raises(ConfigError, match="amsgrad applies to adam and adamw only"):
        TrainConfig.from_dict({"optimizer": "adan", "amsgrad": True})
    with pytest.raises(ConfigError, match="eps must be a positive"):
        TrainConfig.from_dict({"eps": 0})
    with pytest.raises(ConfigError, match="Adan: betas must be three numbers"):
        Adan([torch.zeros(1, requires_grad=True)], betas=(0.9, 1.0, 0.9))


def test_optimizer_choice_and_unchanged_hashes_at_defaults():
    from zoo.bench.run import hparam_hash

    old = TrainConfig()
    assert not {"optimizer", "betas", "eps", "amsgrad"} & set(old.to_dict())  # rows before the keys
    same = TrainConfig.from_dict({"optimizer": "adam", "eps": 1e-8, "amsgrad": False})
    assert hparam_hash("sk", {}, same) == hparam_hash("sk", {}, old)
    other = TrainConfig.from_dict({"optimizer": "adamw", "betas": [0.99, 0.999]})
    assert hparam_hash("sk", {}, other) != hparam_hash("sk", {}, old)
    assert TrainConfig.from_dict(other.to_dict()) == other

    p = [torch.nn.Parameter(torch.ones(3))]
    opt = TrainConfig(optimizer="adamw", betas=[0.99, 0.999], amsgrad=True, weight_decay=0.1).make_optimizer(p)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.99, 0.999) and opt.defaults["amsgrad"]
    opt = TrainConfig(optimizer="adan", lr=5e-3, weight_decay=1e-3).make_optimizer(p)
    assert isinstance(opt, Adan) and opt.defaults["betas"] == (0.98, 0.92, 0.99)
    # decoupled decay: with a zero gradient Adan's only move is theta / (1 + lr wd); Adam's L2 term moves more
    p[0].grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(p[0].detach(), torch.full((3,), 1 / (1 + 5e-3 * 1e-3)), rtol=0, atol=1e-7)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_dataset(tmp_path_factory.mktemp("ds") / "tiny")


@pytest.mark.parametrize("optimizer", ["adamw", "adan"])
def test_resume_with_stages_is_exact_for_each_optimizer(tiny, tmp_path, optimizer):
    """Kill after epoch 3 (inside stage 2, which restarted the lr and weight decay), resume: the same
    history and weights as the uninterrupted run; a checkpoint of another optimizer is refused."""
    stages = [{"name": "a", "epochs": 2}, {"name": "b", "lr": 0.003, "weight_decay": 0.01}]
    cfg = dict(lr=0.01, max_epochs=5, patience=1, batch_size=2, dtype="float64", optimizer=optimizer,
               weight_decay=1e-3, stages=stages)
    train, val = _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64)
    full = Trainer(_model(tiny), train, val, TrainConfig(**cfg), seed=3, run_dir=tmp_path / "a", card_hash="h",
                   quiet=True)
    ra = full.fit()
    assert [h["lr"] for h in ra.history][:3] == [0.01, 0.01, 0.003]
    assert full.opt.param_groups[0]["weight_decay"] == 0.01
    Trainer(_model(tiny), train, val, TrainConfig(**{**cfg, "max_epochs": 3}), seed=3, run_dir=tmp_path / "b",
            card_hash="h", quiet=True).fit()
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["stage_index"] == 1
    resumed = Trainer(_model(tiny, seed=99), train, val, TrainConfig(**cfg), seed=3, run_dir=tmp_path / "b",
                      card_hash="h", quiet=True)
    rb = resumed.fit(resume=True)
    assert [h["train_loss"] for h in ra.history] == [h["train_loss"] for h in rb.history]
    assert ra.history[-1]["train_loss"] < ra.history[0]["train_loss"]
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])
    wrong = Trainer(_model(tiny), train, val, TrainConfig(**{**cfg, "optimizer": "adam"}), seed=3,
                    run_dir=tmp_path / "b", card_hash="h", quiet=True)
    with pytest.raises(ZooError, match=f"trained with optimizer '{optimizer}'"):
        wrong.fit(resume=True)
