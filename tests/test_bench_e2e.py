"""End to end: `zoo bench --model sk` on a tiny dataset made here, then leaderboard, report, predict."""

import json
import math

import numpy as np
import pytest

from zoo.bench.leaderboard import read_rows
from zoo.cli.main import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from ase.build import bulk

    from zoo.data.format import DatasetWriter, Structure
    from zoo.data.synthetic import toy_record
    from zoo.physics.basis import get_basis

    basis = get_basis("szv-molopt-sr").subset([8, 72])
    path = tmp_path_factory.mktemp("ds") / "tiny"
    with DatasetWriter(path, "tiny-e2e", basis, 3.3, {"method": "toy", "code": "zoo.synthetic"}) as w:
        for k in range(4):
            at = bulk("MgO", "rocksalt", a=4.4).repeat((2, 2, 2))
            at.numbers[at.numbers == 12] = 72
            at.rattle(0.1, seed=10 + k)
            w.add(toy_record(Structure.from_ase(at), basis, 3.3, name=f"s{k}"))
        return w.finalize({"train": ["s0", "s1"], "val": ["s2"], "test": ["s3"]})


REQUIRED = ["model", "preset", "hparam_hash", "card_hash", "level_of_theory", "seed", "budget", "epochs_run",
            "git_commit", "cpu", "cores", "torch", "device", "node_mae_mev", "edge_mae_mev", "total_mae_mev",
            "total_std_mev", "node_mae_meh", "eig_rel_l1", "eig_rel_l2_occ", "gap_err_mev", "eig_mae_window_mev",
            "equivariance_max_mev", "params", "time_per_epoch_s", "peak_mem_mb", "infer_us_per_atom",
            "mae_mev[sd]", "edge_mae_mev[O-Hf]"]


def test_bench_sk_appends_a_valid_row(tiny, tmp_path, capsys):
    lb, runs = tmp_path / "lb", tmp_path / "runs"
    common = ["--dataset", str(tiny.path), "--leaderboard-dir", str(lb), "--runs-dir", str(runs), "--quiet"]
    assert main(["bench", "--model", "sk", "--max-epochs", "3", "--seed", "1", "--set", "lr=0.02",
                 "--set", "model.n_radial=6", *common]) == 0
    cols, rows = read_rows(lb / "tiny-e2e.csv")
    assert len(rows) == 1
    row = rows[0]
    assert set(REQUIRED) <= set(cols)
    assert row["model"] == "sk" and row["epochs_run"] == "3" and row["budget"] == "epochs=3"
    assert row["card_hash"] == tiny.card.hash() and "method=toy" in row["level_of_theory"]
    assert row["recipe_hash"] == tiny.card.recipe_hash() and row["overrides"] == "lr=0.02 model.n_radial=6"
    for k in ("total_mae_mev", "eig_rel_l1", "gap_err_mev", "params", "time_per_epoch_s"):
        assert math.isfinite(float(row[k])) and float(row[k]) >= 0, k
    assert float(row["equivariance_max_mev"]) < 1.0
    (run_dir,) = list((runs / "tiny-e2e").iterdir())
    for f in ("checkpoint.pt", "config.json", "metrics.json", "history.json", "parity.png", "error_vs_distance.png",
              "spectra.png"):
        assert (run_dir / f).is_file(), f
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["train"]["lr"] == 0.02 and cfg["hparams"]["n_radial"] == 6

    # leaderboard rendering, re-rendered report, prediction for a new structure
    capsys.readouterr()
    assert main(["leaderboard", "tiny-e2e", "--leaderboard-dir", str(lb), "--sort", "total_mae_mev"]) == 0
    assert "| sk" in capsys.readouterr().out
    (run_dir / "parity.png").unlink()
    assert main(["report", str(run_dir)]) == 0 and (run_dir / "parity.png").is_file()
    from ase.build import bulk

    at = bulk("MgO", "rocksalt", a=4.4).repeat((2, 2, 2))
    at.numbers[at.numbers == 12] = 72
    at.write(tmp_path / "new.xyz", format="extxyz")
    assert main(["predict", str(run_dir / "checkpoint.pt"), str(tmp_path / "new.xyz"), "-o", str(tmp_path / "H.npz")]) == 0
    h = np.load(tmp_path / "H.npz")
    assert h["h_onsite"].size == int((h["norb"] ** 2).sum()) and np.isfinite(h["h_offsite"]).all()

    # a second run (resume path of the CLI: continue the first run to 4 epochs) appends a second row
    assert main(["bench", "--resume", str(run_dir), "--max-epochs", "4", "--quiet", "--leaderboard-dir", str(lb),
                 "--runs-dir", str(runs)]) == 0
    _, rows = read_rows(lb / "tiny-e2e.csv")
    assert len(rows) == 2 and rows[1]["epochs_run"] == "4"
    assert rows[1]["overrides"] == rows[0]["overrides"]  # a resumed row names the run's own overrides


def test_nan_run_writes_no_row(tiny, tmp_path, capsys):
    lb, runs = tmp_path / "lb", tmp_path / "runs"
    rc = main(["bench", "--model", "sk", "--dataset", str(tiny.path), "--max-epochs", "2", "--set",
               "init_scale=.nan", "--leaderboard-dir", str(lb), "--runs-dir", str(runs), "--quiet"])
    assert rc == 1
    assert "non-finite training loss" in capsys.readouterr().err
    assert not (lb / "tiny-e2e.csv").exists()
    (run_dir,) = list((runs / "tiny-e2e").iterdir())
    assert "epoch 1, step 1" in (run_dir / "error.txt").read_text()


def test_bad_overrides_are_errors(tiny, tmp_path, capsys):
    base = ["bench", "--model", "sk", "--dataset", str(tiny.path), "--runs-dir", str(tmp_path), "--leaderboard-dir",
            str(tmp_path)]
    assert main(base + ["--set", "learning_rate=1"]) == 1
    assert "not a training key" in capsys.readouterr().err
    assert main(base + ["--preset", "huge"]) == 1
    assert "no preset 'huge'" in capsys.readouterr().err
    assert main(["bench", "--model", "sk", "--dataset", str(tmp_path / "nope")]) == 1


def test_bench_on_partitions(tmp_path):
    from ase.build import bulk

    from zoo.data.format import DatasetWriter, Structure
    from zoo.data.synthetic import toy_record
    from zoo.physics.basis import get_basis

    basis = get_basis("szv-molopt-sr").subset([8, 72])
    with DatasetWriter(tmp_path / "cubic", "cubic", basis, 3.3, {"method": "toy"}) as w:
        for k in range(3):
            at = bulk("MgO", "rocksalt", a=4.4, cubic=True).repeat((2, 2, 2))
            at.numbers[at.numbers == 12] = 72
            at.rattle(0.1, seed=k)
            w.add(toy_record(Structure.from_ase(at), basis, 3.3, name=f"c{k}", overlap=False))
        w.finalize({"train": ["c0"], "val": ["c1"], "test": ["c2"]})
    assert main(["bench", "--model", "sk", "--dataset", str(tmp_path / "cubic"), "--partitioner", "slices",
                 "--t-slice", "3", "--max-epochs", "2", "--quiet", "--runs-dir", str(tmp_path / "runs"),
                 "--leaderboard-dir", str(tmp_path / "lb")]) == 0
    _, rows = read_rows(tmp_path / "lb" / "cubic.csv")
    assert rows[0]["partitioner"] == "slices:3.0:one-way"
    (run_dir,) = list((tmp_path / "runs" / "cubic").iterdir())
    assert json.loads((run_dir / "config.json").read_text())["n_train_graphs"] == 3


def test_partition_options_resolve_from_preset_and_cli():
    from zoo.bench.run import BenchOptions, partition_label, resolve_partition
    from zoo.errors import ConfigError

    base = dict(model="escn", dataset="x", preset="cpu")
    part = resolve_partition(BenchOptions(**base))
    assert part["partitioner"] == "slices" and part["virtual"] == "one-way"  # from the preset
    assert resolve_partition(BenchOptions(**base, partitioner="none")) is None
    part = resolve_partition(BenchOptions(**base, partitioner="slices", t_slice=3.0, virtual="two-way", halo_hops=0))
    assert partition_label(part) == "slices:3.0:two-way:halo0"
    assert resolve_partition(BenchOptions(model="sk", dataset="x")) is None  # sk presets train on full graphs
    with pytest.raises(ConfigError, match="need a partitioner"):
        resolve_partition(BenchOptions(model="sk", dataset="x", t_slice=3.0))


def test_preset_partition_skipped_for_molecules():
    from zoo.bench.run import BenchOptions, resolve_partition

    assert resolve_partition(BenchOptions(model="escn", dataset="x"), periodic=False) is None
    part = resolve_partition(BenchOptions(model="escn", dataset="x", partitioner="slices", t_slice=2.0), periodic=False)
    assert part["partitioner"] == "slices"
