"""Training stages, the prepare hook, CPU budgets and `--set` on `--resume`."""

import json

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import write_toy_dataset
from tests.test_bench_trainer import _graphs, _model, _tiny_dataset
from zoo.bench import terms
from zoo.bench.losses import label_masks
from zoo.bench.trainer import Trainer, TrainConfig, load_checkpoint
from zoo.data.torch_data import DatasetInfo
from zoo.errors import ConfigError
from zoo.models.trivial.model import TrivialTwoCentre

SEEN: list = []


def _toy_term(model, pred, batch, info, *, scale: float = 1.0):
    """A stand-in extra term: scale * mean of the squared on-site prediction; logs the graphs it saw."""
    SEEN.append(list(batch.name))
    mn, _ = label_masks(batch)
    d = pred.node_blocks[mn]
    return scale * (d * d).sum(), torch.as_tensor(float(d.numel()), dtype=d.dtype, device=d.device)


@pytest.fixture
def toy_term(monkeypatch):
    monkeypatch.setitem(terms.EXTRA_TERMS, "toy_l2", _toy_term)
    SEEN.clear()
    return SEEN


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_dataset(tmp_path_factory.mktemp("ds") / "tiny")


# HamGNN's recipe: H loss until min-lr or half of the budget, then H loss + a band-energy term
HAMGNN_RECIPE = """
paper:
  train:
    lr: 0.01
    min_lr: 1.0e-4
    patience: 5
    max_epochs: 4
    batch_size: 4
    dtype: float64
    stages:
      - name: hamiltonian
        loss: mse
        share: 0.5
      - name: bands
        lr: 0.005
        data: full
        extra:
          - {term: TERM, weight: 0.5, PARAMS}
"""


def _recipe(term: str, params: str) -> TrainConfig:
    section = yaml.safe_load(HAMGNN_RECIPE.replace("TERM", term).replace("PARAMS", params))["paper"]["train"]
    return TrainConfig.from_dict(section, where="hamgnn-like:paper:train")


def test_stage_errors_name_the_preset_and_stage(toy_term):
    where = "mynet:cpu:train"
    bad = [
        ([{"name": "a", "epochs": 2, "learning_rate": 1}, {}],
         r"stage 1 \('a'\): unknown key\(s\) \['learning_rate'\]"),
        ([{"share": 0.5}, {"share": 0.2}], r"stage 2 .*last stage takes the rest"),
        ([{"share": 0.6}, {"share": 0.5}, {}], r"stage 2 .*shares add up to 1.1"),
        ([{"epochs": 2, "share": 0.5}, {}], r"stage 1 .*epochs or share, not both"),
        ([{"data": "halo"}], r"stage 1 .*data must be one of"),
        ([{"extra": [{"term": "nope"}]}], r"stage 1 .*unknown extra term 'nope'"),
        ([{"extra": [{"term": "toy_l2", "sharpness": 2}]}], r"stage 1 .*has no parameter\(s\) \['sharpness'\]"),
        ([{"loss": "l7"}], r"stage 1 .*unknown loss"),
        ([{"epochs": 0}, {}], r"stage 1 .*epochs must be a positive integer"),
    ]
    for stages, msg in bad:
        with pytest.raises(ConfigError, match=where + ": " + msg):
            TrainConfig.from_dict({"stages": stages}, where=where)


def test_hamgnn_recipe_runs_as_a_preset(tiny, toy_term):
    cfg = _recipe("toy_l2", "scale: 2.0")
    train, val = _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64)
    # stage 1 trains on "partitions" (here: the first two structures), stage 2 on the full set
    r = Trainer(_model(tiny), train[:2], val, cfg, seed=1, quiet=True, train_full=train).fit()
    assert [h["stage"] for h in r.history] == [1, 1, 2, 2]  # share 0.5 of 4 epochs, the rest for stage 2
    assert [h["stage_name"] for h in r.history] == ["hamiltonian"] * 2 + ["bands"] * 2
    assert r.history[2]["lr"] == 0.005  # the stage restarts from its own lr with a new scheduler
    assert "terms" not in r.history[1] and r.history[2]["terms"]["toy_l2"] > 0
    assert sorted(sum(SEEN, [])) == sorted([g.name for g in train] * 2)  # data: full in stage 2 only
    # the term's weight enters the gradient: weight 0 ends elsewhere
    cfg0 = _recipe("toy_l2", "scale: 2.0")
    cfg0.stages[1]["extra"][0]["weight"] = 0.0
    t0 = Trainer(_model(tiny), train[:2], val, TrainConfig.from_dict(cfg0.to_dict()), seed=1, quiet=True,
                 train_full=train)
    r0 = t0.fit()
    assert r0.history[1]["train_loss"] == r.history[1]["train_loss"]  # same stage 1
    assert r0.history[3]["val_loss"] != r.history[3]["val_loss"]


def test_hamgnn_recipe_with_the_band_energy_term(tmp_path):
    """The recipe with zoo.bench.terms.band_energy on a tiny molecule (S positive definite)."""
    from ase.build import molecule

    from zoo.data.format import DatasetWriter, Structure
    from zoo.data.synthetic import toy_record
    from zoo.physics.basis import get_basis

    basis = get_basis("szv-molopt-sr").subset([1, 8])
    with DatasetWriter(tmp_path / "w", "water", basis, 4.0, {"method": "toy", "code": "zoo.synthetic"}) as w:
        for k in range(4):
            at = molecule("H2O")
            at.rattle(0.05, seed=k)
            w.add(toy_record(Structure.from_ase(at), basis, 4.0, name=f"m{k}"))
        ds = w.finalize({"train": ["m0", "m1"], "val": ["m2"], "test": ["m3"]})
    cfg = _recipe("band_energy", "n_k: 1")
    train, val = _graphs(ds, "train", torch.float64), _graphs(ds, "val", torch.float64)
    torch.manual_seed(0)
    model = TrivialTwoCentre(DatasetInfo.from_dataset(ds), n_radial=4)
    r = Trainer(model, train, val, cfg, quiet=True, train_full=train).fit()
    assert [h["stage"] for h in r.history] == [1, 1, 2, 2]
    be = [h["terms"]["band_energy"] for h in r.history[2:]]
    assert all(np.isfinite(be)) and be[0] > 0


def test_resume_inside_stage_two_equals_uninterrupted(tiny, toy_term, tmp_path):
    base = dict(lr=0.02, max_epochs=6, batch_size=2, dtype="float64", patience=0, threshold=10.0, min_lr=1e-9,
                stages=[{"name": "h", "epochs": 2},
                        {"name": "h+x", "lr": 0.005, "lr_decay": 0.5, "extra": [{"term": "toy_l2", "weight": 0.3}]}])
    train, val = _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64)
    full = Trainer(_model(tiny), train, val, TrainConfig.from_dict(base), seed=3, run_dir=tmp_path / "a",
                   card_hash="h", quiet=True)
    ra = full.fit()
    Trainer(_model(tiny), train, val, TrainConfig.from_dict({**base, "max_epochs": 3}), seed=3,
            run_dir=tmp_path / "b", card_hash="h", quiet=True).fit()
    ck = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (ck["epoch"], ck["stage_index"], ck["stage_epoch"], ck["stage_name"]) == (3, 1, 1, "h+x")
    resumed = Trainer(_model(tiny, seed=99), train, val, TrainConfig.from_dict(base), seed=3,
                      run_dir=tmp_path / "b", card_hash="h", quiet=True)
    rb = resumed.fit(resume=True)
    assert ra.epochs_run == rb.epochs_run == 6
    for key in ("train_loss", "val_loss", "lr", "stage", "stage_epoch", "terms"):
        assert [h.get(key) for h in ra.history] == [h.get(key) for h in rb.history], key
    # stage 2 restarts at its lr and its new scheduler halves it every epoch (threshold 10: never better)
    assert [h["lr"] for h in ra.history][2:] == [0.005, 0.0025, 0.00125, 0.000625]
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


class Prepared(TrivialTwoCentre):
    """Fits the mean on-site diagonal per element in `prepare`; counts the calls."""

    calls = 0

    def __init__(self, info, n_radial: int = 4):
        super().__init__(info, n_radial=n_radial)
        self.register_buffer("mean_diag", torch.zeros(len(info.elements)))

    def prepare(self, train_graphs):
        type(self).calls += 1
        acc = torch.zeros_like(self.mean_diag, dtype=torch.float64)
        cnt = torch.zeros_like(acc)
        for g in train_graphs:
            d = torch.diagonal(g.y_node, dim1=1, dim2=2).double()
            m = g.node_orb_mask
            zi = self.z_index[g.z.to(self.z_index.device)].cpu()
            acc.index_add_(0, zi, (d * m).sum(1))
            cnt.index_add_(0, zi, m.sum(1).double())
        self.mean_diag.copy_(acc / cnt)

    def forward(self, batch):
        p = super().forward(batch)
        shift = self.mean_diag[self.z_index[batch.z]].to(p.node_blocks.dtype)
        eye = torch.eye(p.node_blocks.shape[-1], dtype=p.node_blocks.dtype, device=p.node_blocks.device)
        return type(p)(p.node_blocks + shift[:, None, None] * eye, p.edge_blocks)


def test_prepare_runs_once_and_resume_restores_its_buffers(tiny, tmp_path):
    train, val = _graphs(tiny, "train", torch.float64), _graphs(tiny, "val", torch.float64)
    info = DatasetInfo.from_dataset(tiny)
    Prepared.calls = 0
    cfg = dict(lr=0.01, max_epochs=2, dtype="float64", batch_size=4)
    t = Trainer(Prepared(info), train, val, TrainConfig(**cfg), run_dir=tmp_path, card_hash="h", quiet=True)
    t.fit()
    assert Prepared.calls == 1
    fitted = t.model.mean_diag.clone()
    ref = np.mean(np.concatenate([np.diagonal(g.y_node.numpy(), axis1=1, axis2=2)[g.node_orb_mask.numpy()
                                                                                 & (g.z == 8).numpy()[:, None]]
                                  for g in train]))
    assert fitted[t.model.z_index[8]].item() == pytest.approx(ref, rel=1e-12)
    again = Trainer(Prepared(info), train, val, TrainConfig(**{**cfg, "max_epochs": 3}), run_dir=tmp_path,
                    card_hash="h", quiet=True)
    assert torch.all(again.model.mean_diag == 0)
    again.fit(resume=True)
    assert Prepared.calls == 1  # not called on resume
    assert torch.equal(again.model.mean_diag, fitted)  # came back with the state_dict


def test_cpu_budget(tiny, tmp_path):
    from zoo.bench.run import budget_string, build_config

    train, val = _graphs(tiny, "train"), _graphs(tiny, "val")
    cfg = TrainConfig(max_epochs=10**9, cpu_budget_min=1e-6)
    r = Trainer(_model(tiny), train, val, cfg, run_dir=tmp_path, card_hash="h", quiet=True).fit()
    assert r.stop_reason == "cpu_budget" and r.epochs_run == 1
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["cpu_elapsed"] == pytest.approx(r.history[0]["cpu_s"]) and ck["cpu_elapsed"] > 0
    _, c = build_config("sk", "cpu", cpu_budget_min=0.5)
    assert (c.cpu_budget_min, c.time_budget_min) == (0.5, None) and budget_string(c) == "cpu=0.5min"
    _, c = build_config("sk", "cpu", ["cpu_budget_min=2", "max_epochs=7", "time_budget_min=3",
                                       "standardize=true"])
    assert budget_string(c) == "epochs=7,time=3min,cpu=2min" and c.standardize is True
    with pytest.raises(ConfigError, match="--max-epochs and --cpu-budget"):
        build_config("sk", "cpu", max_epochs=3, cpu_budget_min=1.0)


def test_set_on_resume_is_honoured_for_budgets_and_refused_otherwise(tmp_path, capsys):
    from zoo.cli.main import main

    ds = write_toy_dataset(tmp_path / "toy", n=3, cutoff=3.5, reps=(1, 1, 1))
    args = ["bench", "--model", "sk", "--dataset", str(ds), "--max-epochs", "2", "--quiet", "--set", "dtype=float64",
            "--runs-dir", str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "lb")]
    assert main(args) == 0
    (run,) = (tmp_path / "runs" / "toy-hfo2").iterdir()
    capsys.readouterr()
    assert main(["bench", "--resume", str(run), "--quiet", "--set", "lr=0.5", "--set", "max_epochs=3",
                 "--set", "model.n_radial=3", "--leaderboard-dir", str(tmp_path / "lb")]) != 0
    err = capsys.readouterr().err
    assert "--set on --resume can change only" in err and "refusing ['lr', 'model.n_radial']" in err
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2  # a refused resume trains nothing
    assert main(["bench", "--resume", str(run), "--quiet", "--set", "max_epochs=3", "--set", "device=cpu",
                 "--leaderboard-dir", str(tmp_path / "lb")]) == 0
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["epoch"] == 3 and ck["train_config"]["max_epochs"] == 3
    row = json.loads((run / "row.json").read_text())
    assert row["epochs_run"] == 3 and row["budget"] == "epochs=3"
