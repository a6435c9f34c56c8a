"""Leaderboards: one CSV per dataset, one row per run, appended atomically under a file lock.

An append takes `<csv>.lock` (filelock); when the row brings no new columns it is written as
one `write()` of a complete line followed by fsync, otherwise the file is rewritten with the
union of columns to a temp file and renamed over the old one. Either way a concurrent reader
or writer never sees a torn line, and no row is lost.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

from filelock import FileLock

from zoo.data.format import atomic_write
from zoo.errors import ZooError

LOCK_TIMEOUT_S = 120.0

#: identity columns, in display order; metrics follow
ID_COLUMNS = ["run_id", "date", "model", "preset", "hparam_hash", "dataset", "card_hash", "level_of_theory", "seed",
              "budget", "epochs_run", "stop_reason", "partitioner", "world_size", "git_commit", "cpu", "cores",
              "threads", "torch", "device"]
#: metrics shown by default in `zoo leaderboard` (all columns with --all)
SUMMARY_COLUMNS = ["run_id", "model", "preset", "card_hash", "partitioner", "budget", "seed", "epochs_run", "node_mae_mev", "edge_mae_mev", "total_mae_mev",
                   "total_std_mev", "eig_rel_l1", "eig_rel_l1_occ", "gap_err_mev", "eig_mae_window_mev",
                   "equivariance_max_mev", "params", "time_per_epoch_s", "peak_mem_mb", "infer_us_per_atom"]
#: columns where larger is better; every other numeric metric is an error or a cost
HIGHER_IS_BETTER: set[str] = set()
#: numeric columns that are descriptions, not scores (never marked best)
NOT_SCORES = {"seed", "epochs_run", "world_size", "cores", "threads", "gap_ref_ev", "n_test_atoms", "params"}


def leaderboard_path(dataset: str, directory: str | Path = "leaderboards") -> Path:
    return Path(directory) / f"{dataset}.csv"


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def _line(row: Mapping, columns: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_fmt(row.get(c)) for c in columns])
    return buf.getvalue()


def read_rows(path: str | Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a leaderboard CSV; rows are dicts of strings."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{path}: no leaderboard (run `zoo bench` on this dataset first)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = list(reader.fieldnames or [])
        rows = list(reader)
    for k, r in enumerate(rows):
        if None in r or any(v is None for v in r.values()):
            raise ZooError(f"{path}: row {k + 2} has the wrong number of fields (corrupt leaderboard)")
    return cols, rows


def append_row(path: str | Path, row: Mapping) -> None:
    """Append one run's row; adds new columns by rewriting the file atomically. Safe across processes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
    with lock:
        if path.is_file() and path.stat().st_size > 0:
            cols, rows = read_rows(path)
        else:
            cols, rows = [], []
        new = [c for c in row if c not in cols]
        if not new and cols:
            with open(path, "a", newline="") as f:
                f.write(_line(row, cols))
                f.flush()
                os.fsync(f.fileno())
            return
        ordered = [c for c in ID_COLUMNS if c in cols or c in row]
        ordered += [c for c in cols if c not in ordered] + [c for c in row if c not in ordered and c not in cols]
        text = _line({c: c for c in ordered}, ordered) + "".join(_line(r, ordered) for r in rows + [dict(row)])
        atomic_write(path, lambda p: p.write_text(text), suffix=".csv")


def _num(v: str) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def render(path: str | Path, sort: str | None = None, fmt: str = "md", all_columns: bool = False) -> str:
    """The leaderboard as a markdown table (best value per metric column in bold) or CSV (best marked '*')."""
    from tabulate import tabulate

    cols, rows = read_rows(path)
    if sort is not None:
        if sort not in cols:
            raise ZooError(f"{path}: no column {sort!r} to sort by; columns: {', '.join(cols)}")
        sgn = -1.0 if sort in HIGHER_IS_BETTER else 1.0

        def key(r):  # numbers ascending (descending when higher is better), then text, blanks last
            x = _num(r[sort])
            return (x is None, sgn * x if x is not None else 0.0, r[sort])

        rows.sort(key=key)
    show = cols if all_columns or fmt == "csv" else [c for c in SUMMARY_COLUMNS if c in cols] or cols
    # rows on different builds of a dataset (card_hash) are not comparable: group them, best within each
    builds = list(dict.fromkeys(r.get("card_hash", "") for r in rows))
    rows.sort(key=lambda r: builds.index(r.get("card_hash", "")))  # stable: the --sort order within a build
    best: dict[tuple[str, str], float] = {}
    for b in builds:
        group = [r for r in rows if r.get("card_hash", "") == b]
        for c in show:
            nums = [x for x in (_num(r[c]) for r in group) if x is not None]
            if c in NOT_SCORES or c in ID_COLUMNS or not nums:
                continue
            best[b, c] = max(nums) if c in HIGHER_IS_BETTER else min(nums)

    def cell(r, c):
        v = r[c]
        x = _num(v)
        if fmt == "md" and x is not None and c not in ID_COLUMNS:
            v = f"{x:.4g}"
        if x is not None and best.get((r.get("card_hash", ""), c)) == x:
            return f"**{v}**" if fmt == "md" else f"{v}*"
        return v

    table = [[cell(r, c) for c in show] for r in rows]
    if fmt == "md":
        text = tabulate(table, headers=show, tablefmt="github", disable_numparse=True)
        if len(builds) > 1:
            text += (f"\n\n{len(builds)} builds of the dataset (card_hash {', '.join(b or '-' for b in builds)}): "
                     "rows are grouped by build and the best value is marked within each; rows on different "
                     "builds are not comparable")
        return text
    if fmt == "csv":
        return _line({c: c for c in show}, show) + "".join(_line(dict(zip(show, t)), show) for t in table)
    raise ZooError(f"unknown leaderboard format {fmt!r} (md or csv)")
