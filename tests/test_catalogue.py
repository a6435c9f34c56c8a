"""Catalogue: fixture dataset, cache paths, resumable builds with clear errors, CLI."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from zoo.data import Dataset
from zoo.data import catalogue as cat
from zoo.data.catalogue import pool
from zoo.data.catalogue.recipes import c_hfo2_cell, given
from zoo.data.format import Structure
from zoo.errors import ZooError


@pytest.fixture(scope="module")
def fixture_ds(tmp_path_factory):
    return Dataset.open(cat.build_fixture(tmp_path_factory.mktemp("fx") / "fixture"))


def test_fixture_is_a_valid_tblite_dataset(fixture_ds):
    card = fixture_ds.card
    assert card.level_of_theory["code"] == "tblite" and card.level_of_theory["method"] == "GFN1-xTB"
    assert card.image_convention == "gamma-folded" and card.has_overlap
    assert {k: len(v) for k, v in card.splits.items()} == {"train": 1, "val": 1, "test": 1}
    rec = fixture_ds.read("train")  # validates on read
    assert rec.n_atoms == 12 and sorted(set(rec.numbers.tolist())) == [8, 72]
    # both directions, H_ji(-R) = H_ij(R)^T, for H and S
    key = {(i, j, *s): e for e, ((i, j), s) in enumerate(zip(rec.edge_index.tolist(), rec.edge_shift.tolist()))}
    for which in ("H", "S"):
        blocks = rec.edge_blocks(which)
        for (i, j, *s), e in key.items():
            back = key[(j, i, *(-np.array(s)).tolist())]
            assert np.allclose(blocks[e], blocks[back].T, atol=1e-10)
    on = rec.onsite_blocks("S")
    # normalised AOs; Gamma folding adds each atom's overlap with its own images (large for the
    # diffuse Hf 6p in a 5 A cell, small for O)
    assert all(np.allclose(b, b.T) for b in on)
    assert all(np.allclose(np.diag(b), 1.0, atol=0.05) for b, z in zip(on, rec.numbers) if z == 8)
    # S cut at 2.4 A is indefinite in these cells: the card says so, measured
    spectrum = card.provenance["spectrum"]
    assert spectrum["mode"] == "H-only" and spectrum["s_min_eig"] < 0 and spectrum["measured_on"] == 3


def test_names_sizes_and_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "envcache"))
    assert cat.dataset_path("a-hfo2") == tmp_path / "envcache" / "a-hfo2" / "small"
    assert cat.dataset_path("a-hfo2@paper") == tmp_path / "envcache" / "a-hfo2" / "paper"
    assert cat.dataset_path("md17-h2o", cache=tmp_path / "x") == tmp_path / "x" / "md17-h2o" / "small"
    monkeypatch.delenv("ZOO_CACHE")
    assert str(cat.cache_dir()).endswith(".cache/zoo/datasets")
    with pytest.raises(ZooError, match="unknown dataset 'a-hfo3'"):
        cat.dataset_path("a-hfo3")
    with pytest.raises(ZooError, match="no size 'huge'"):
        cat.parse_name("a-hfo2@huge")
    assert cat.CATALOGUE["a-hfo2"].sizes["paper"].cutoff == 8.0
    assert cat.CATALOGUE["md17-h2o"].sizes["paper"].params["counts"] == (500, 500, 499)


def _tiny_entry(bad_test: bool) -> cat.Entry:
    def plan(entry, size, seed):
        jobs = [("train-0", "train", partial(c_hfo2_cell, 1, 1, 0.05, 0.0)),
                ("val-0", "val", partial(c_hfo2_cell, 1, 2, 0.05, 0.0))]
        if bad_test:  # helium is not in the GFN1 basis table: the engine refuses it
            he = Structure([2, 8], [[0, 0, 0], [1.5, 1.5, 1.5]], np.eye(3) * 6, True)
            jobs.append(("test-0", "test", partial(given, he)))
        else:
            jobs.append(("test-0", "test", partial(c_hfo2_cell, 1, 3, 0.05, 0.0)))
        return jobs

    return cat.Entry("tiny", "test entry", "tblite", {"small": cat.Size(2.4, {})}, plan, bond_cut=2.6)


def test_build_fails_clearly_then_resumes(monkeypatch, tmp_path):
    monkeypatch.setitem(cat.CATALOGUE, "tiny", _tiny_entry(bad_test=True))
    with pytest.raises(ZooError, match="structure 'test-0' failed.*re-run to resume"):
        cat.build("tiny", cache=tmp_path, progress=False)
    staging = tmp_path / "tiny" / ".small.partial" / "structures"
    assert sorted(p.name for p in staging.glob("*.h5")) == ["train-0.h5", "val-0.h5"]
    assert not list(staging.glob("*.tmp")) and not cat.is_built("tiny", cache=tmp_path)
    before = (staging / "train-0.h5").stat().st_mtime_ns

    monkeypatch.setitem(cat.CATALOGUE, "tiny", _tiny_entry(bad_test=False))
    path = cat.ensure_built("tiny", cache=tmp_path, progress=False)
    ds = Dataset.open(path)
    assert len(ds) == 3 and ds.split("test") == ["test-0"]
    assert (path / "structures" / "train-0.h5").stat().st_mtime_ns == before  # not recomputed
    prov = ds.card.provenance
    assert prov["generation_seed"] == 2024 and prov["build_cost"]["sum_structure_wall_s"] > 0
    assert prov["truncation"]["max_dropped_frac_frobenius_h"] > 0
    assert prov["structure_stats"]["val-0"]["cn_mean"]["Hf"] == 7.0  # m-HfO2: Hf sevenfold by O
    # S truncated at 2.4 A in 5 A cells is indefinite, as in the fixture
    assert prov["spectrum"]["mode"] == "H-only" and prov["spectrum"]["measured_on"] == 3


def test_unfolded_build_has_explicit_images(monkeypatch, tmp_path):
    monkeypatch.setitem(cat.CATALOGUE, "tiny", _tiny_entry(bad_test=False))
    # margin 0: the 5 A cells already hold 2 x 2.4 A, so the "supercell" is the cell itself (fast);
    # tests/test_engines.py checks a real 2x2x2 unfolding
    path = cat.build("tiny", cache=tmp_path, progress=False, unfold=True, unfold_margin=0.0)
    ds = Dataset.open(path)
    assert path.name == "small-unfolded" and ds.name == "tiny+unfolded"
    assert cat.dataset_path("tiny+unfolded", cache=tmp_path) == path
    assert ds.card.image_convention == "explicit"
    rec = ds.read("val-0")
    assert rec.meta["unfolded_from_supercell"] == [1, 1, 1]
    assert cat.unfold_repeat(rec.structure, 5.0, 10.0) == (3, 3, 3)


def test_cli_list_and_errors(tmp_path, capsys):
    from zoo.cli.main import main

    assert main(["data", "list", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "a-hfo2@paper" in out and "md17-h2o" in out and "pyscf" in out
    assert main(["data", "build", "no-such-set", "--cache", str(tmp_path)]) == 1
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["data", "build", "md17-h2o", "--engine", "vasp", "--cache", str(tmp_path)]) == 1
    assert "unknown engine" in capsys.readouterr().err


def test_plans_name_every_split():
    hfox = cat.CATALOGUE["a-hfox"]
    jobs = hfox.plan(hfox, "small", hfox.seed)
    assert [n for n, _, _ in jobs][:3] == ["train-v05", "train-v10", "train-v15"] and len(jobs) == 9
    assert {s for _, s, _ in jobs} == {"train", "val", "test"}
    c = cat.CATALOGUE["c-hfo2"]
    st = c.plan(c, "small", c.seed)[0][2]()  # building a crystal structure is cheap: check it
    assert st.n_atoms == 96 and st.pbc.all()


def test_new_entries_plan_three_independent_cells_wide_enough_for_their_cutoff():
    from zoo.data import covalent as cv
    from zoo.data.structures import elongated_cell

    for name in ("a-ptge", "a-gst"):
        e = cat.CATALOGUE[name]
        jobs = e.plan(e, "small", e.seed)
        assert [(n, s) for n, s, _ in jobs] == [("train-0", "train"), ("val-0", "val"), ("test-0", "test")]
        assert len({j.args[1] for _, _, j in jobs}) == 3  # three generation seeds
        assert e.bond_cut and e.engine == "tblite"
    # the cells' narrow widths (y = z = x / 2) must hold 2 x cutoff for Gamma folding
    ge_vol = 72.630 * 1.66053906660 / cv.A_GE_DENSITY
    for size, spec in cat.CATALOGUE["a-ptge"].sizes.items():
        vol = spec.params["n_atoms"] * (cv.PT_FCC_VOLUME + 2 * ge_vol) / 3
        assert (vol / 2) ** (1 / 3) >= 2 * spec.cutoff, size
    for size, spec in cat.CATALOGUE["a-gst"].sizes.items():
        nf = spec.params["n_formula"]
        cell = elongated_cell(nf * (72.630 + 2 * 121.760 + 4 * 127.60), cv.A_GST_DENSITY)
        assert cell[1, 1] >= 2 * spec.cutoff, size
    for name in ("md17-malondialdehyde", "md17-uracil"):
        assert cat.CATALOGUE[name].sizes["paper"].params["counts"] == (500, 500, 499)


def test_cli_stats_on_a_built_dataset(fixture_ds, capsys):
    import json

    from zoo.cli.main import main

    assert main(["data", "stats", str(fixture_ds.path), "--bond-cut", "2.6", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert set(stats) == {"train", "val", "test"} and stats["val"]["cn_mean"]["Hf"] == 7.0
    assert main(["data", "stats", str(fixture_ds.path)]) == 0
    assert "fixture-hfo2: bonds shorter than 3.0 A" in capsys.readouterr().out


def test_stop_workers_ends_children_and_grandchildren():
    import subprocess
    import sys

    import psutil

    child = subprocess.Popen([sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); "
                              "time.sleep(60)"])
    for _ in range(100):  # wait until the grandchild exists
        if psutil.Process(child.pid).children():
            break
        __import__("time").sleep(0.05)
    grandchild = psutil.Process(child.pid).children()[0]
    pool.stop_workers([child.pid])
    assert child.wait(timeout=10) is not None
    assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE


def test_worker_environment():
    env = pool.worker_env(2, "tblite")
    assert env["OMP_NUM_THREADS"] == str(max(1, (__import__("os").cpu_count() or 1) // 2))
    assert ("LD_PRELOAD" in env) == pool.OPENBLAS.is_file()
    assert pool.worker_env(1, "pyscf") == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert pool.worker_env(1, "cp2k") == {"OMP_NUM_THREADS": str(__import__("os").cpu_count() or 1)}


@pytest.mark.parametrize("engine", ["tblite", "pyscf", "cp2k"])
def test_each_installed_engine_makes_a_fixture_the_harness_trains_on(engine, tmp_path, capsys):
    """The CI-safe fixture of every installed engine: real H and S, and `zoo bench` trains on it."""
    from zoo.bench.leaderboard import read_rows
    from zoo.cli.main import main
    from zoo.data.engines import EngineError, get_engine

    try:
        get_engine(engine)
    except EngineError as exc:
        pytest.skip(f"{engine} not installed here: {exc}")
    ds = Dataset.open(cat.build_fixture(tmp_path / "fx", engine=engine))
    assert ds.card.level_of_theory["code"].lower() == engine and len(ds) == 3
    rec = ds.read("test")  # validated on read
    assert rec.has_overlap and np.abs(rec.h_offsite).max() > 1e-3
    lb = tmp_path / "lb"
    assert main(["bench", "--model", "sk", "--dataset", str(ds.path), "--max-epochs", "2", "--quiet",
                 "--leaderboard-dir", str(lb), "--runs-dir", str(tmp_path / "runs")]) == 0
    _, rows = read_rows(lb / f"{ds.name}.csv")
    assert len(rows) == 1 and float(rows[0]["total_mae_mev"]) > 0
    assert engine in rows[0]["level_of_theory"].lower()
    with pytest.raises(EngineError, match="no fixture recipe"):
        cat.build_fixture(tmp_path / "x", engine="vasp")


def _explodes(seed: int):
    raise RuntimeError("recipe blew up")


def _dies(seed: int):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would


@pytest.mark.parametrize("recipe, message", [
    (_explodes, "RuntimeError: recipe blew up"),
    (_dies, "its worker process died abruptly"),  # breaks the pool: still named, the finished ones kept
])
def test_a_failing_structure_is_a_clear_error_naming_it(recipe, message, monkeypatch, tmp_path):
    entry = _tiny_entry(bad_test=False)

    def plan(e, size, seed):
        return entry.plan(e, size, seed)[:2] + [("test-0", "test", partial(recipe, 1))]

    monkeypatch.setitem(cat.CATALOGUE, "tiny", cat.Entry("tiny", "x", "tblite", entry.sizes, plan))
    with pytest.raises(ZooError, match=f"structure 'test-0' failed: {message}.*re-run to resume"):
        cat.build("tiny", cache=tmp_path, progress=False)
    staging = tmp_path / "tiny" / ".small.partial" / "structures"
    assert sorted(p.name for p in staging.glob("*.h5")) == ["train-0.h5", "val-0.h5"]


def test_concurrent_builds_of_one_dataset_take_turns(monkeypatch, tmp_path):
    """Two builders of the same dataset: the second waits on the lock, then finds it built."""
    import threading

    from filelock import FileLock

    monkeypatch.setitem(cat.CATALOGUE, "tiny", _tiny_entry(bad_test=False))
    dest = cat.dataset_path("tiny", cache=tmp_path)
    dest.parent.mkdir(parents=True)
    held = FileLock(str(dest.parent / ".small.lock"))
    held.acquire()  # "another process" is building
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("path", cat.build("tiny", cache=tmp_path, progress=False)))
    t.start()
    t.join(timeout=2)
    assert t.is_alive() and not cat.is_built("tiny", cache=tmp_path)  # waiting, not building beside it
    held.release()
    t.join(timeout=120)
    assert result["path"] == dest and cat.is_built("tiny", cache=tmp_path)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_build_stops_its_workers(sig, tmp_path):
    """Ctrl-C or SIGTERM during `zoo data build`: exit 130 soon, no worker left running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    env = {**os.environ, "ZOO_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli.main", "data", "build", "md17-h2o", "--size", "medium",
                             "--jobs", "2", "--quiet"], env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    me = psutil.Process(proc.pid)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the pool's workers compute
        workers = [c for c in me.children() if "spawn_main" in " ".join(c.cmdline())]
        if len(workers) == 2 and any((tmp_path / "md17-h2o").glob(".medium.partial/structures/*.h5")):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the build never started its workers")
    proc.send_signal(getattr(signal, sig))
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a hung build must not outlive the test
            for p in [me, *me.children(recursive=True)]:
                p.kill()
    assert proc.returncode == 130 and "interrupted" in err
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert not list((tmp_path / "md17-h2o").glob(".medium.partial/structures/*.tmp"))


def test_size_in_the_name_is_honoured():
    """'md17-h2o@medium' is the medium build even where a caller passes no size (zoo bench's default);
    a different explicit size is an error, not a silent switch to another build."""
    from zoo.data.catalogue.entries import parse_name

    assert parse_name("md17-h2o@medium")[1] == "medium"
    assert parse_name("md17-h2o@medium", None)[1] == "medium"
    assert parse_name("md17-h2o", None)[1] == "small"
    assert parse_name("md17-h2o", "medium")[1] == "medium"
    assert parse_name("a-hfo2+cp2k@paper")[1] == "paper"
    with pytest.raises(ZooError, match="names size 'medium' but size 'small'"):
        parse_name("md17-h2o@medium", "small")
