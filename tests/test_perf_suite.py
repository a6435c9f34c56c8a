"""`zoo perf` (zoo.bench.perf): the sections run at tiny sizes and give their columns, the fits are
right on synthetic numbers, partitioned training epochs equal the full graph's, bad input is a clear
error. Correctness only: no timing is asserted."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import perturbed, tiny_hfo2
from zoo.bench.perf import PerfOptions, run_perf
from zoo.bench.perf import inference, throughput, training, worker
from zoo.bench.perf.backbones import default_models, preset_hparams, untrained
from zoo.bench.perf.family import Family, choose_repeat, parse_sizes, slab_repeat
from zoo.bench.perf.inference import fit_exponent, memory_flatness
from zoo.data.big import write_structure
from zoo.data.format import Structure
from zoo.errors import ConfigError, ModelError
from zoo.cli.main import main

CUTOFF = 3.0


@pytest.fixture
def cell_file(tmp_path):
    return write_structure(Structure.from_ase(tiny_hfo2(reps=(1, 1, 1))), tmp_path / "hfo2.extxyz")


@pytest.fixture
def in_process(monkeypatch):
    """Every measurement in this process (a fresh process per row costs seconds of imports each)."""
    def run(spec, threads=1, timeout=None):
        return {"status": "ok", **worker.run_job({**spec, "threads": threads})}

    for mod in (inference, training, throughput):
        monkeypatch.setattr(mod, "isolated", run)


def _opts(cell_file, tmp_path, **kw) -> PerfOptions:
    base = dict(models="sk,lcnet", structure=str(cell_file), cutoff=CUTOFF, train_cutoff=CUTOFF, sizes="100,250",
                train_atoms=60, slices="2", partitioners="slices,rcb,metis", epochs=1, repeats=1, quiet=True,
                json=str(tmp_path / "perf.json"), workdir=str(tmp_path))
    return PerfOptions(**{**base, **kw})


def test_suite_at_tiny_sizes(cell_file, tmp_path, in_process, capsys):
    res = run_perf(_opts(cell_file, tmp_path))
    out = capsys.readouterr().out
    for title in ("## inference", "## training", "### load imbalance", "## throughput", "machine: ", "zoo commit"):
        assert title in out
    for col in ("peak RSS MB", "CPU s", "time exponent (goal 1.0)", "memory flatness (goal <= 1.2)", "CPU s/epoch",
                "time vs full", "halo/labelled atoms", "slabs imbalance", "RCB imbalance", "METIS imbalance",
                "fwd+bwd edges/s", "params"):
        assert col in out, col
    inf = res["inference"]
    assert [r["atoms"] for r in inf["rows"]] == [96, 216] * 2 and all(r["status"] == "ok" for r in inf["rows"])
    assert {s["model"] for s in inf["summary"]} == {"sk", "lcnet"}
    assert all(np.isfinite(s["time_exponent"]) and s["sizes"] == 2 for s in inf["summary"])
    tr = res["training"]["rows"]
    assert [(r["model"], r["parts"]) for r in tr] == [(m, n) for m in ("sk", "lcnet") for n in (0, 2)]
    assert all(r["status"] == "ok" and r["time_ratio"] > 0 for r in tr)
    # the same random targets and weights: every configuration's loss is the full graph's
    for m in ("sk", "lcnet"):
        losses = [r["loss"] for r in tr if r["model"] == m]
        assert np.allclose(losses, losses[0], rtol=1e-4)
    assert {t["hops"] for t in res["training"]["partitioners"]} == {1, 2}
    assert {r["model"] for r in res["throughput"]["rows"]} == {"sk", "lcnet"}
    assert min(r["cost_vs_cheapest"] for r in res["throughput"]["rows"]) == 1.0
    saved = json.loads((tmp_path / "perf.json").read_text())
    assert saved["machine"]["commit"] and saved["machine"]["threads"] == 1
    assert set(saved) >= {"inference", "training", "throughput", "train_cell", "options"}


def test_profile_top_ops(cell_file, tmp_path, capsys):
    res = run_perf(_opts(cell_file, tmp_path, profile="sk", profile_atoms=100, top=5, json=None))
    ops = res["profile"]["ops"]
    assert len(ops) == 5 and ops[0]["self_cpu_ms"] >= ops[-1]["self_cpu_ms"]
    out = capsys.readouterr().out
    assert "## profile: sk" in out and "self CPU ms" in out and "inference" not in res


def test_worker_process_reports_status(cell_file):
    """A real worker process; a failing job and a timeout become statuses, not exceptions."""
    assert worker.isolated({"job": "nope"}).get("status", "").startswith("failed: ValueError: unknown job")
    assert worker.isolated({"job": "nope"}, timeout=1e-3)["status"].startswith("timed out")


def test_exponent_and_flatness_on_synthetic_numbers():
    n = np.array([1000, 3000, 10000, 30000])
    assert math.isclose(fit_exponent(n, 2.5 * n ** 1.0), 1.0, abs_tol=1e-12)
    assert math.isclose(fit_exponent(n, 1e-3 * n ** 1.37), 1.37, abs_tol=1e-12)
    assert math.isnan(fit_exponent([1000, 1000], [1.0, 2.0]))
    assert memory_flatness(list(n), [500.0, 600.0, 650.0, 690.0]) == pytest.approx(690 / 600)
    assert memory_flatness([1152, 3072], [400.0, 520.0]) == pytest.approx(520 / 400)
    assert math.isnan(memory_flatness([1000], [1.0]))


@pytest.mark.parametrize("name", ["sk", "lcnet"])
def test_partitioned_epoch_equals_full_graph(name):
    """Loss and gradient of an epoch over slabs (each partition's error sum over the count of every
    labelled entry) equal the full graph's."""
    from zoo.data.torch_data import collate

    fam = Family(Structure.from_ase(tiny_hfo2(reps=(3, 2, 2))), "test", CUTOFF, "gfn1-xtb")
    info = fam.info()
    model = perturbed(untrained(name, info, preset_hparams(name, "cpu")))
    data = training.training_graph(fam.cell, info, torch.float64)
    grads, losses = [], []
    for parts in (None, 3):
        batches = [collate([g]) for g in ([data] if parts is None else training.partition_graph(data, model, "slices",
                                                                                               parts))]
        model.zero_grad()
        losses.append(training.epoch(model, batches, training.label_count(batches)))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert len(batches) == 3
    assert losses[1] == pytest.approx(losses[0], rel=1e-10)
    assert torch.allclose(grads[1], grads[0], rtol=1e-8, atol=1e-12) and grads[0].abs().max() > 0


def test_supercells_respect_the_cutoff():
    cell = Structure.from_ase(tiny_hfo2(reps=(1, 1, 1)))  # 12 atoms, 5.1 A cube
    assert choose_repeat(cell, 100, CUTOFF) == (2, 2, 2)  # 96 atoms: the smallest with widths >= 6 A
    reps = choose_repeat(cell, 1000, 4.0)
    assert abs(math.log(12 * np.prod(reps) / 1000)) < math.log(1.2) and min(reps) * 5.1 >= 8.0
    rod = slab_repeat(cell, 200, CUTOFF)
    assert 12 * np.prod(rod) >= 200 and sorted(rod)[:2] == [2, 2]
    assert parse_sizes("3k, 1k,1.5k,1000") == [1000, 1500, 3000]


def test_bad_input_is_a_clear_error(cell_file, tmp_path):
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        run_perf(_opts(cell_file, tmp_path, models="sk,nope"))
    with pytest.raises(ConfigError, match=r"size 10 atoms.*2 x cutoff \(6 A\).*the smallest 96"):
        run_perf(_opts(cell_file, tmp_path, sizes="10,100"))
    with pytest.raises(ConfigError, match="same supercell"):
        run_perf(_opts(cell_file, tmp_path, sizes="96,100"))
    with pytest.raises(ConfigError, match="--suite: unknown speed"):
        run_perf(_opts(cell_file, tmp_path, suites="inference,speed"))
    with pytest.raises(ConfigError, match="--sizes"):
        run_perf(_opts(cell_file, tmp_path, sizes="1k,big"))


def test_cli_errors_and_defaults(cell_file, tmp_path, capsys):
    assert main(["perf", "--models", "nope", "--structure", str(cell_file)]) == 1
    err = capsys.readouterr().err
    assert "zoo: error:" in err and "nope" in err and "Traceback" not in err
    assert "trivial" not in default_models() and "mean" not in default_models()
    assert {"escn", "lcnet", "hamgnn", "acdc", "sk"} <= set(default_models())
