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
    assert "2 builds of the dataset (card_hash old, new)" in lines[-1]
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
