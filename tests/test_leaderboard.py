"""Leaderboard CSVs: atomic appends under a lock, column growth, rendering."""

import csv
import multiprocessing as mp

import pytest

from zoo.bench.leaderboard import append_row, read_rows, render
from zoo.errors import ZooError


def _row(who: int, k: int, extra: bool = False) -> dict:
    row = {"run_id": f"r{who}-{k}", "model": f"m{who}", "preset": "cpu", "seed": k,
           "total_mae_mev": 10.0 + who + k / 10, "note": "a,b \"quoted\"" * 3}
    if extra:
        row[f"extra_metric_{who}"] = float(k)  # new column: forces the rewrite path under the lock
    return row


def _appender(path: str, who: int, n: int) -> None:
    for k in range(n):
        append_row(path, _row(who, k, extra=(k == n // 2)))


@pytest.mark.parametrize("n_proc", [2, 8])
def test_concurrent_appends_lose_nothing(tmp_path, n_proc):
    path = tmp_path / "lb.csv"
    n = 5
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(str(path), w, n)) for w in range(n_proc)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cols, rows = read_rows(path)
    assert len(rows) == n_proc * n
    assert sorted(r["run_id"] for r in rows) == sorted(f"r{w}-{k}" for w in range(n_proc) for k in range(n))
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    assert all(len(line) == len(cols) for line in lines)  # no torn or short line
    for r in rows:
        w, k = map(int, r["run_id"][1:].split("-"))
        assert float(r["total_mae_mev"]) == pytest.approx(10.0 + w + k / 10)
        assert r["note"] == "a,b \"quoted\"" * 3
    assert all(f"extra_metric_{w}" in cols for w in range(n_proc))


def test_render_marks_best_and_sorts(tmp_path):
    path = tmp_path / "lb.csv"
    append_row(path, {"model": "a", "total_mae_mev": 5.0, "eig_rel_l1": 0.1, "seed": 0})
    append_row(path, {"model": "b", "total_mae_mev": 2.5, "eig_rel_l1": 0.3, "seed": 1})
    md = render(path, sort="total_mae_mev")
    lines = md.splitlines()
    assert lines[2].startswith("| b") and "**2.5**" in lines[2] and "**0.1**" in lines[3]
    assert "**1**" not in md  # seed is not a score
    out = render(path, fmt="csv")
    assert "2.5*" in out and "0.1*" in out
    with pytest.raises(ZooError, match="no column"):
        render(path, sort="nope")
    with pytest.raises(ZooError, match="no leaderboard"):
        render(tmp_path / "missing.csv")


def test_rows_on_different_dataset_builds_are_ranked_apart(tmp_path):
    path = tmp_path / "lb.csv"
    append_row(path, {"model": "a", "card_hash": "old", "total_mae_mev": 5.0})
    append_row(path, {"model": "b", "card_hash": "new", "total_mae_mev": 9.0})
    append_row(path, {"model": "c", "card_hash": "old", "total_mae_mev": 7.0})
    append_row(path, {"model": "d", "card_hash": "new", "total_mae_mev": 8.0})
    lines = render(path).splitlines()
    assert [ln.split("|")[1].strip() for ln in lines[2:6]] == ["a", "c", "b", "d"]  # grouped by build
    assert "**5**" in lines[2] and "**8**" in lines[5] and "**" not in lines[3] + lines[4]
    assert "2 comparison classes (dataset recipe, budget): card:old [no budget]; card:new [no budget]" in lines[-1]
    sorted_md = render(path, sort="total_mae_mev").splitlines()
    assert [ln.split("|")[1].strip() for ln in sorted_md[2:6]] == ["a", "c", "d", "b"]
    assert "**" not in render(path, fmt="csv").splitlines()[0] and render(path, fmt="csv").count("*") == 2


def test_corrupt_row_is_reported(tmp_path):
    path = tmp_path / "lb.csv"
    append_row(path, {"model": "a", "x": 1.0})
    with open(path, "a") as f:
        f.write("b,2,3,4\n")
    with pytest.raises(ZooError, match="wrong number of fields"):
        read_rows(path)


# -- seeds, ablations, recipes, spectra: what a reader of the table must be able to trust ----------------

def _run(model, seed, total, *, recipe="r1", card="c1", budget="cpu=8min", hh=None, overrides="", preset="cpu",
         spectrum="H,S", **extra):
    """A row of a preset run (its hparam_hash is the preset's own unless `hh` says otherwise)."""
    from zoo.bench.leaderboard import preset_defaults

    if hh is None:
        hh = (preset_defaults(model, preset) or ("h",))[0]
    return {"run_id": f"{model}-{seed}-{total}", "model": model, "preset": preset, "hparam_hash": hh,
            "overrides": overrides, "dataset": "ds", "recipe_hash": recipe, "card_hash": card, "seed": seed,
            "budget": budget, "partitioner": "", "spectrum": spectrum, "total_mae_mev": total, **extra}


def _table(md):
    """{model: [cells]} of the markdown table's body, and the header."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return head, body


def test_seeds_of_one_configuration_are_aggregated(tmp_path):
    path = tmp_path / "ds.csv"
    for seed, total in ((0, 10.0), (1, 12.0), (2, 14.0)):
        append_row(path, _run("escn", seed, total, node_mae_mev=total / 2))
    append_row(path, _run("sk", 0, 30.0, node_mae_mev=20.0))
    head, body = _table(render(path))
    assert len(body) == 2  # one line per configuration, not per run
    escn = dict(zip(head, body[0]))
    assert escn["n"] == "3" and escn["seeds"] == "0,1,2"
    assert escn["total_mae_mev"] == "**12** ± 2"  # mean, sample std (ddof=1) of 10, 12, 14
    assert escn["node_mae_mev"] == "**6** ± 1"
    assert dict(zip(head, body[1]))["n"] == "1" and "±" not in dict(zip(head, body[1]))["total_mae_mev"]
    assert "mean ± sample std over its n runs" in render(path)
    # --runs keeps one line per run; csv gives the std its own column
    assert len(_table(render(path, runs=True))[1]) == 4
    cols, rows = next(csv.reader([render(path, fmt="csv").splitlines()[0]])), None
    assert "total_mae_mev_std" in cols


def test_best_is_never_given_to_an_ablation(tmp_path):
    path = tmp_path / "ds.csv"
    append_row(path, _run("escn", 0, 20.0))
    append_row(path, _run("escn", 0, 5.0, hh="other", overrides="lr=0.1"))  # an ablation that happens to win
    append_row(path, _run("sk", 0, 30.0))
    head, body = _table(render(path))
    rows = {(r[head.index("model")], r[head.index("variant")]): dict(zip(head, r)) for r in body}
    assert rows["escn", "default"]["total_mae_mev"] == "**20**"
    assert rows["escn", "ablation"]["total_mae_mev"] == "5"  # not bold although lowest
    assert "never marked best" in render(path)


def test_legacy_rows_are_ablations_when_they_depart_from_the_preset(tmp_path):
    """Rows written before the `overrides` column: the preset's own hparam hash decides."""
    from zoo.bench.leaderboard import preset_defaults

    hh, part = preset_defaults("sk", "cpu")
    path = tmp_path / "ds.csv"
    base = {"model": "sk", "preset": "cpu", "card_hash": "c", "budget": "time=5min", "partitioner": part}
    append_row(path, {**base, "run_id": "a", "hparam_hash": hh, "total_mae_mev": 9.0})
    append_row(path, {**base, "run_id": "b", "hparam_hash": "0123456789ab", "total_mae_mev": 1.0})
    head, body = _table(render(path))
    got = {r[head.index("variant")]: r[head.index("total_mae_mev")] for r in body}
    assert got == {"default": "**9**", "ablation": "1"}


def test_builds_of_one_recipe_are_compared_but_budgets_are_not(tmp_path):
    path = tmp_path / "ds.csv"
    append_row(path, _run("escn", 0, 10.0, card="buildA"))
    append_row(path, _run("escn", 1, 14.0, card="buildB"))  # same recipe rebuilt elsewhere: same benchmark
    append_row(path, _run("sk", 0, 13.0, card="buildB"))
    append_row(path, _run("sk", 0, 3.0, budget="epochs=5000"))  # a bigger budget is another class
    head, body = _table(render(path))
    rows = [dict(zip(head, r)) for r in body]
    escn = next(r for r in rows if r["model"] == "escn")
    assert escn["n"] == "2" and escn["card_hash"] == "buildA/buildB" and escn["total_mae_mev"] == "**12** ± 2.828"
    sk = [r for r in rows if r["model"] == "sk"]
    assert [r["budget"] for r in sk] == ["cpu=8min", "epochs=5000"]
    assert sk[0]["total_mae_mev"] == "13" and sk[1]["total_mae_mev"] == "**3**"
    assert "2 comparison classes (dataset recipe, budget): r1 [cpu=8min]; r1 [epochs=5000]" in render(path)


def test_the_mean_baseline_calibrates_every_budget_class(tmp_path):
    path = tmp_path / "ds.csv"
    append_row(path, _run("escn", 0, 10.0, budget="cpu=8min"))
    append_row(path, _run("sk", 0, 3.0, budget="epochs=5000"))
    append_row(path, _run("mean", 0, 50.0, budget="epochs=2"))
    append_row(path, _run("mean", 0, 60.0, budget="epochs=2", recipe="r2"))  # another recipe: stays apart
    head, body = _table(render(path))
    rows = [dict(zip(head, r)) for r in body]
    assert [(r["model"], r["recipe"], r["total_mae_mev"]) for r in rows] == [
        ("escn", "r1", "**10**"), ("mean", "r1", "50"), ("sk", "r1", "**3**"), ("mean", "r1", "50"),
        ("mean", "r2", "**60**")]
    assert "shown in every budget class of its recipe" in render(path)


def test_spectrum_mode_is_shown_and_pseudo_spectra_are_named(tmp_path):
    path = tmp_path / "ds.csv"
    append_row(path, _run("escn", 0, 10.0, spectrum="H only", eig_rel_l1=0.01, eig_mae_mev=40.0,
                          eig_mae_occ_mev=float("nan")))
    append_row(path, _run("sk", 0, 20.0, spectrum="H,S", eig_rel_l1=0.02, eig_mae_mev=80.0, eig_mae_occ_mev=70.0))
    md = render(path)
    head, body = _table(md)
    rows = {r[head.index("model")]: dict(zip(head, r)) for r in body}
    assert rows["escn"]["spectrum"] == "H only" and rows["sk"]["spectrum"] == "H,S"
    # eig(H) without S is never in the same column as a generalized spectrum, so it is never ranked against it
    assert rows["escn"]["pseudo_eig_mae_mev"] == "**40**" and rows["escn"]["eig_mae_mev"] == ""
    assert rows["sk"]["eig_mae_mev"] == "**80**" and rows["sk"]["pseudo_eig_mae_mev"] == ""
    assert "pseudo_eig_mae_occ_mev" not in head  # NaN everywhere: not shown
    assert "eig(H) without S" in md


def test_recipe_hash_ignores_the_build_but_not_the_recipe():
    from zoo.data.format import DatasetCard, recipe_hash
    from zoo.physics.basis import get_basis

    def card(**change):
        prov = {"catalogue_entry": "a-hfo2", "size": "small", "generation_seed": 7,
                "build_cost": {"this_run_wall_s": 100.0, "host": "x86_64 2 cpus"},
                "per_structure": {"s0": {"wall_s": 12.3}}, "truncation": {"max_dropped_max_abs_h": 1e-7}}
        kw = dict(name="a-hfo2", level_of_theory={"code": "tblite", "code_version": "0.8.0", "method": "GFN1-xTB"},
                  basis=get_basis("szv-molopt-sr"), cutoff=7.0, splits={"train": ["s0"], "val": [], "test": []},
                  structures={"s0": {"sha256": "aa", "n_atoms": 12}}, elements=[8, 72], provenance=prov)
        for k, v in change.items():
            if k.startswith("prov_"):
                prov[k[5:]] = v
            else:
                kw[k] = v
        return DatasetCard(**kw)

    a = card()
    other_build = card(structures={"s0": {"sha256": "bb", "n_atoms": 12}},
                       prov_build_cost={"this_run_wall_s": 55.0, "host": "arm64 8 cpus"},
                       prov_truncation={"max_dropped_max_abs_h": 3e-7})
    assert other_build.hash() != a.hash() and recipe_hash(other_build) == recipe_hash(a) == a.recipe_hash()
    for change in (dict(cutoff=8.0), dict(prov_size="large"), dict(prov_generation_seed=8),
                   dict(level_of_theory={"code": "tblite", "code_version": "0.9.0", "method": "GFN1-xTB"}),
                   dict(splits={"train": [], "val": [], "test": ["s0"]})):
        assert recipe_hash(card(**change)) != recipe_hash(a), change
    # an import of a user's files has no recipe but its data: then the checksums count
    imp = card(provenance={})
    assert recipe_hash(card(provenance={}, structures={"s0": {"sha256": "bb", "n_atoms": 12}})) != recipe_hash(imp)


# -- the comparison view --------------------------------------------------------------------------------

def _write_board(d, rng_seed=0):
    """Two datasets; escn, sk, mean with seeds; one escn ablation and a stray budget."""
    for ds, scale in (("alpha", 1.0), ("beta", 3.0)):
        path = d / f"{ds}.csv"
        for model, base in (("escn", 10.0), ("sk", 20.0), ("mean", 60.0)):
            for seed in (0, 1):
                total = scale * base + seed  # seeds 0, 1 -> mean base*scale + 0.5, std 0.7071
                budget = "epochs=2" if model == "mean" else "cpu=8min"  # mean: a closed-form baseline
                append_row(path, {**_run(model, seed, total, recipe=f"rec-{ds}", budget=budget), "dataset": ds,
                                  "node_mae_mev": total * 2, "edge_mae_mev": total / 2, "cpu": "Test CPU",
                                  "cores": 2, "threads": 1, "device": "cpu", "torch": "2.x", "epochs_run": 7})
        append_row(path, {**_run("escn", 0, 0.1, recipe=f"rec-{ds}", hh="x", overrides="lr=1"), "dataset": ds})
        append_row(path, {**_run("sk", 0, 0.2, recipe=f"rec-{ds}", budget="epochs=9"), "dataset": ds})


def test_compare_ranks_models_within_each_dataset(tmp_path):
    from zoo.bench.leaderboard import build_comparison, render_comparison

    _write_board(tmp_path)
    comp = build_comparison(tmp_path, "total")
    assert comp.datasets == ["alpha", "beta"] and comp.models == ["escn", "mean", "sk"]
    assert comp.value("escn", "beta") == (pytest.approx(30.5), pytest.approx(2 ** -0.5), 2)
    assert comp.rank("alpha") == {"escn": 1, "sk": 2, "mean": 3}  # the 0.1 ablation and the epochs=9 run are out
    md = render_comparison(comp)
    head, body = _table(md)
    assert head == ["total_mae_mev", "alpha", "beta"]
    cells = {r[0]: r[1:] for r in body}
    assert cells["escn"][0] == "**10.5 ± 0.7071 (n=2) #1**" and cells["mean"][1] == "180.5 ± 0.7071 (n=2) #3"
    # listed, not mixed in; the budget-free mean baseline is the calibration row of that class too
    assert "alpha: epochs=9; recipe rec-alpha (2 models)" in md
    long = list(csv.DictReader(render_comparison(comp, fmt="csv").splitlines()))
    assert len(long) == 6 and {r["model"] for r in long} == {"escn", "sk", "mean"}
    beta_mean = next(r for r in long if r["model"] == "mean" and r["dataset"] == "beta")
    assert float(beta_mean["mean"]) == pytest.approx(180.5) and beta_mean["n"] == "2" and beta_mean["rank"] == "3"
    node = build_comparison(tmp_path, "node")
    assert node.column == "node_mae_mev" and node.value("sk", "alpha")[0] == pytest.approx(41.0)
    with pytest.raises(ZooError, match="no leaderboard .* has column 'nope'"):
        build_comparison(tmp_path, "nope")
    with pytest.raises(ZooError, match="no leaderboard CSVs"):
        build_comparison(tmp_path / "empty", "total")


def test_compare_write_regenerates_readme_and_charts(tmp_path, capsys):
    import numpy as np

    from zoo.cli.main import main

    lb, runs = tmp_path / "lb", tmp_path / "runs"
    lb.mkdir()
    _write_board(lb)
    # report data of escn's best alpha run only: the others must be reported missing, not invented
    run = runs / "alpha" / "escn-0-10.0"
    run.mkdir(parents=True)
    np.savez(run / "report_data.npz", parity_ref=np.linspace(-1, 1, 50), parity_pred=np.linspace(-1, 1, 50) * 1.1,
             parity_is_edge=np.arange(50) % 2 == 0)
    assert main(["leaderboard", "--compare", "--write", "--leaderboard-dir", str(lb), "--runs-dir", str(runs)]) == 0
    readme = (lb / "README.md").read_text()
    assert f"zoo leaderboard --compare --write --leaderboard-dir {lb} --runs-dir {runs}" in readme
    for title in ("## Total MAE (meV)", "## Node (on-site) MAE (meV)", "## Edge (off-site) MAE (meV)",
                  "## Budgets, builds and hardware"):
        assert title in readme
    assert "**10.5 ± 0.7071 (n=2) #1**" in readme and "Test CPU, 2 cores, 1 threads, cpu, torch 2.x" in readme
    assert "cpu=8min; recipe rec-alpha" in readme
    assert "![parity alpha](parity_alpha.png)" in readme and "parity_beta.png" not in readme
    assert "alpha: no parity plot for mean (run mean-0-60.0" in readme
    for png in ("compare_total_mae.png", "parity_alpha.png"):
        assert (lb / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert str(lb / "README.md") in out
    # the plain comparison prints the table; errors name the misuse
    assert main(["leaderboard", "--compare", "--metric", "edge", "--leaderboard-dir", str(lb)]) == 0
    assert "edge_mae_mev" in capsys.readouterr().out
    assert main(["leaderboard", "--leaderboard-dir", str(lb)]) == 1
    assert "name a DATASET" in capsys.readouterr().err


def test_example_02_bench_and_compare(tmp_path, capsys, monkeypatch):
    """examples/02_bench_and_compare.py runs end to end (bench with seeds -> leaderboard -> compare -> write)."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "02_bench_and_compare.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path)])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    start = out.index("| model")
    at = out.index("\n| total_mae_mev") + 1  # the comparison table starts with its metric's name
    head, body = _table(out[start:at])
    rows = {r[head.index("model")]: dict(zip(head, r)) for r in body}
    assert rows["sk"]["n"] == "2" and rows["sk"]["seeds"] == "0,1" and rows["mean"]["n"] == "1"
    compare = out[at:]
    assert "example-c" in compare and "example-si" in compare
    # trained sk beats the calibration row on both datasets
    assert [ln.split("|")[1].strip() for ln in compare.splitlines()[2:4]] == ["mean", "sk"]
    assert compare.count("#1**") == 2 and compare.splitlines()[3].count("#1") == 2
    assert (tmp_path / "leaderboards" / "README.md").is_file()
    assert not Path("leaderboards/example-si.csv").exists()
