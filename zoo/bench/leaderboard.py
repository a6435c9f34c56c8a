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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from filelock import FileLock

from zoo.data.format import atomic_write
from zoo.errors import ZooError

LOCK_TIMEOUT_S = 120.0

#: identity columns, in display order; metrics follow
ID_COLUMNS = ["run_id", "date", "model", "preset", "hparam_hash", "overrides", "dataset", "recipe_hash", "card_hash",
              "level_of_theory", "seed", "budget", "epochs_run", "stop_reason", "partitioner", "world_size", "git_commit", "cpu", "cores",
              "threads", "torch", "device"]
#: metrics shown by default in `zoo leaderboard` (all columns with --all)
#: `variant` (default / ablation), `recipe` (recipe hash, or card:<build hash> for rows older than recipe
#: hashes) and the pseudo_* spectrum columns are derived for display, see `render`
SUMMARY_COLUMNS = ["run_id", "model", "preset", "variant", "recipe", "card_hash", "spectrum", "partitioner", "budget",
                   "seed", "epochs_run", "node_mae_mev", "edge_mae_mev", "total_mae_mev", "total_std_mev",
                   "eig_mae_mev", "eig_mae_occ_mev", "eig_mae_ef2_mev", "eig_rel_l1", "eig_rel_l1_occ", "gap_err_mev",
                   "eig_mae_window_mev", "equivariance_max_mev", "hermiticity_max_mev", "params", "time_per_epoch_s", "peak_mem_mb", "infer_us_per_atom"]
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


# -- what a row is: its comparison class, its configuration, default or ablation ------------------

#: spectrum-derived columns; on rows whose spectrum is "H only" they are eig(H) without S (not orbital
#: energies) and are shown as pseudo_<column>, never beside generalized-spectrum figures
def _is_spectrum_column(c: str) -> bool:
    return c.startswith("eig_") or c.startswith("gap_")


PSEUDO_NOTE = ("pseudo_*: eigenvalue figures of the hermitized H alone, eig(H) without S (the overlap rebuilt within "
               "the cutoff is indefinite on this data), so not orbital energies and not comparable with a "
               "generalized H c = e S c spectrum; spectrum = the mode each row was scored in")

#: what separates two runs that are seeds of one configuration; (model, preset, hparams, partition, overrides)
CONFIG_COLUMNS = ("model", "preset", "hparam_hash", "partitioner", "overrides")


def recipe_key(row: Mapping) -> str:
    """The dataset recipe a row was scored on: its recipe_hash, or card:<card_hash> for older rows
    (written before recipe hashes; then each build is its own recipe, as before)."""
    r = (row.get("recipe_hash") or "").strip()
    return r if r else f"card:{(row.get('card_hash') or '').strip() or '-'}"


def comparison_class(row: Mapping) -> tuple[str, str]:
    """(recipe, budget): rows are comparable only within one class (same data recipe, same budget)."""
    return recipe_key(row), (row.get("budget") or "").strip()


_DEFAULTS: dict[tuple[str, str], tuple[str, str] | None] = {}


def preset_defaults(model: str, preset: str) -> tuple[str, str] | None:
    """(hparam_hash, partition label) of the preset as shipped today, or None if it cannot be built
    (unknown model or preset: a user's row, or a model since removed)."""
    key = (model, preset)
    if key not in _DEFAULTS:
        try:
            from zoo.bench.run import BenchOptions, build_config, hparam_hash, partition_label, resolve_partition

            hp, cfg = build_config(model, preset)
            part = resolve_partition(BenchOptions(model=model, dataset="", preset=preset), periodic=True)
            _DEFAULTS[key] = (hparam_hash(model, hp, cfg), partition_label(part))
        except ZooError:
            _DEFAULTS[key] = None
    return _DEFAULTS[key]


def is_ablation(row: Mapping) -> bool:
    """True if the run departs from its preset as shipped: `--set` overrides (the `overrides` column,
    where rows have it), a hyper-parameter hash that differs from the preset's (overrides in rows
    older than that column, or a preset changed since), or a partition label that differs from the
    preset's (--partitioner / --t-slice / --virtual / --halo-hops). An empty partitioner counts as
    the preset's (molecules train on full graphs); an unknown model or preset as default."""
    if (row.get("overrides") or "").strip():
        return True
    model, preset = (row.get("model") or "").strip(), (row.get("preset") or "").strip()
    if not model or not preset:
        return False
    ref = preset_defaults(model, preset)
    if ref is None:
        return False
    hh, part = (row.get("hparam_hash") or "").strip(), (row.get("partitioner") or "").strip()
    return bool(hh and hh != ref[0]) or bool(part and part != ref[1])


def _display_row(row: Mapping) -> dict:
    """The row with derived columns (variant, recipe) and H-only spectrum figures moved to pseudo_*."""
    out = dict(row)
    out["variant"] = "ablation" if is_ablation(row) else "default"
    out["recipe"] = recipe_key(row)
    if "H only" in (row.get("spectrum") or ""):
        for c in list(row):
            if _is_spectrum_column(c) and c != "gap_ref_ev":
                out["pseudo_" + c] = out.pop(c)
    return out


# -- seed aggregation ---------------------------------------------------------------------------

@dataclass
class Group:
    """One configuration in one comparison class: the runs that differ only by seed."""

    cls: tuple[str, str]
    config: tuple[str, ...]
    rows: list[dict] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def ablation(self) -> bool:
        return self.rows[0]["variant"] == "ablation"

    def values(self, column: str) -> list[float]:
        return [x for x in (_num(r.get(column, "")) for r in self.rows) if x is not None]

    def mean(self, column: str) -> float | None:
        v = self.values(column)
        return float(np.mean(v)) if v else None

    def std(self, column: str) -> float | None:
        """Sample standard deviation over seeds (ddof = 1); None for a single run."""
        v = self.values(column)
        return float(np.std(v, ddof=1)) if len(v) > 1 else None

    def text(self, column: str) -> str:
        seen = list(dict.fromkeys((r.get(column) or "") for r in self.rows))
        return "/".join(s for s in seen if s) if len(seen) > 1 else seen[0]


#: closed-form baselines: `prepare` fits them and training cannot move them, so a budget means nothing
#: for them; their rows join every budget class of their dataset recipe (the calibration row of each)
BUDGET_FREE_MODELS = {"mean"}


def group_rows(rows: Sequence[Mapping], by_seed: bool = True) -> list[Group]:
    """Display rows (see `_display_row`) grouped by comparison class and configuration, first-seen order.

    by_seed=False keeps every run its own group (the per-run view). Groups of BUDGET_FREE_MODELS
    are repeated in every budget class of their recipe that other models have."""
    groups: dict[tuple, Group] = {}
    for k, r in enumerate(rows):
        cls = comparison_class(r)
        config = tuple((r.get(c) or "").strip() for c in CONFIG_COLUMNS)
        key = (cls, config) if by_seed else (cls, config, k)
        groups.setdefault(key, Group(cls, config)).rows.append(r)
    out = [g for g in groups.values() if g.config[0] not in BUDGET_FREE_MODELS]
    classes = list(dict.fromkeys(g.cls for g in out))
    for g in groups.values():
        if g.config[0] in BUDGET_FREE_MODELS:
            same_recipe = [c for c in classes if c[0] == g.cls[0]]
            out += [Group(c, g.config, g.rows) for c in same_recipe] or [g]
    order = list(dict.fromkeys(g.cls for g in groups.values()))
    order += [c for c in classes if c not in order]
    out.sort(key=lambda g: order.index(g.cls) if g.cls in order else len(order))
    return out


def _is_score(c: str, nums: bool = True) -> bool:
    """A numeric column where lower (or, in HIGHER_IS_BETTER, higher) is better."""
    return nums and c not in NOT_SCORES and c not in ID_COLUMNS and c not in ("variant", "recipe", "n", "seeds") \
        and not c.endswith("gap_ref_ev")


def best_marks(groups: Sequence[Group], columns: Sequence[str]) -> dict[tuple[tuple[str, str], str], float]:
    """{(class, column): best mean} over the default (non-ablation) groups of each comparison class."""
    best: dict = {}
    for g in groups:
        if g.ablation:
            continue
        for c in columns:
            m = g.mean(c)
            if m is None or not _is_score(c, True):
                continue
            k = (g.cls, c)
            if k not in best or ((m > best[k]) if c in HIGHER_IS_BETTER else (m < best[k])):
                best[k] = m
    return best


def _g4(x: float) -> str:
    return f"{x:.4g}"


def render(path: str | Path, sort: str | None = None, fmt: str = "md", all_columns: bool = False,
           runs: bool = False) -> str:
    """A leaderboard as a markdown table (best in bold) or CSV (best marked '*').

    Default: runs of one configuration (model, preset, hparam_hash, partition, overrides) on one
    comparison class (dataset recipe, budget) that differ only in seed are one line, metrics as
    mean +- sample std with n. `runs=True` shows every run. Best values are marked within each
    comparison class among default runs only: an ablation is never ranked against a preset run.
    H-only spectrum figures are shown as pseudo_* columns (see PSEUDO_NOTE).
    """
    from tabulate import tabulate

    cols, raw = read_rows(path)
    if sort is not None and sort not in cols and sort not in ("variant", "recipe"):
        raise ZooError(f"{path}: no column {sort!r} to sort by; columns: {', '.join(cols)}")
    rows = [_display_row(r) for r in raw]
    all_cols = list(dict.fromkeys([c for r in rows for c in r]))
    if sort is not None and sort not in all_cols and sort in cols:
        sort = "pseudo_" + sort  # every row scored this figure on a pseudo-spectrum
    groups = group_rows(rows, by_seed=not runs)
    if sort is not None:
        sgn = -1.0 if sort in HIGHER_IS_BETTER else 1.0

        def key(g):  # numbers ascending (descending when higher is better), then text, blanks last
            x = g.mean(sort)
            return (x is None, sgn * x if x is not None else 0.0, g.text(sort))

        groups.sort(key=key)
    classes = list(dict.fromkeys(g.cls for g in groups))
    groups.sort(key=lambda g: classes.index(g.cls))  # stable: the --sort order within a class

    if all_columns or fmt == "csv":
        base = ["variant", "recipe"] + [c for c in cols if c not in ("run_id",) or runs]
    else:
        base = SUMMARY_COLUMNS
    show = []
    for c in base:
        for cand in (c, "pseudo_" + c):
            if cand in all_cols and cand not in show and (runs or cand not in ("run_id", "seed", "date")):
                show.append(cand)
    if not runs:
        at = show.index("budget") + 1 if "budget" in show else len(show)
        show[at:at] = ["n", "seeds"]
    numeric = {c: any(g.mean(c) is not None for g in groups) for c in show}
    best = best_marks(groups, [c for c in show if numeric[c] and c not in ("n",)])

    def cell(g: Group, c: str) -> str:
        if c == "n":
            return str(g.n)
        if c == "seeds":
            return ",".join(dict.fromkeys((r.get("seed") or "?") for r in g.rows))
        m = g.mean(c)
        if c in ID_COLUMNS or c in ("variant", "recipe") or m is None:
            if c == "epochs_run" and g.n > 1 and m is not None:
                return _g4(m) if fmt == "md" else repr(m)
            return g.text(c)
        v = _g4(m) if fmt == "md" else repr(m)
        if not g.ablation and _is_score(c, True) and best.get((g.cls, c)) == m:
            v = f"**{v}**" if fmt == "md" else f"{v}*"
        sd = g.std(c) if _is_score(c) else None  # descriptions (params, atoms, ...) get no spread
        if sd is not None and fmt == "md":
            v += f" ± {_g4(sd)}"
        return v

    if fmt == "csv":
        out_cols = []
        for c in show:
            out_cols.append(c)
            if not runs and numeric.get(c) and _is_score(c, True) and any(g.n > 1 for g in groups):
                out_cols.append(c + "_std")
        table = []
        for g in groups:
            rec = {}
            for c in out_cols:
                if c.endswith("_std") and c[:-4] in show:
                    sd = g.std(c[:-4])
                    rec[c] = "" if sd is None else repr(sd)
                else:
                    rec[c] = cell(g, c)
            table.append(rec)
        return _line({c: c for c in out_cols}, out_cols) + "".join(_line(t, out_cols) for t in table)
    if fmt != "md":
        raise ZooError(f"unknown leaderboard format {fmt!r} (md or csv)")
    table = [[cell(g, c) for c in show] for g in groups]
    if not all_columns:  # a summary column no row has a value in (e.g. occupied-state figures of pseudo-spectra)
        keep = [k for k, c in enumerate(show) if any(t[k] not in ("", "nan") for t in table)]
        show, table = [show[k] for k in keep], [[t[k] for k in keep] for t in table]
    text = tabulate(table, headers=show, tablefmt="github", disable_numparse=True)
    notes = []
    if not runs and any(g.n > 1 for g in groups):
        notes.append("metrics of a configuration run with several seeds: mean ± sample std over its n runs")
    if len(classes) > 1:
        notes.append(f"{len(classes)} comparison classes (dataset recipe, budget): "
                     + "; ".join(f"{r} [{b or 'no budget'}]" for r, b in classes)
                     + ". Rows are grouped by class and the best value is marked within each; rows in "
                       "different classes are not comparable")
    if any(g.config[0] in BUDGET_FREE_MODELS and g.cls != comparison_class(g.rows[0]) for g in groups):
        notes.append(f"{', '.join(sorted(BUDGET_FREE_MODELS))}: a closed-form baseline (fitted by prepare, training "
                     "cannot move it), so shown in every budget class of its recipe")
    if any(g.ablation for g in groups):
        notes.append("ablation: the run departs from its preset (--set overrides, hyper-parameters or partition "
                     "options); never marked best")
    if any(c.startswith("pseudo_") for c in show):
        notes.append(PSEUDO_NOTE)
    return text + "".join("\n\n" + n for n in notes)


# -- the comparison view: models x datasets ------------------------------------------------------

#: --metric names of the comparison view -> leaderboard columns
COMPARE_METRICS = {"total": "total_mae_mev", "node": "node_mae_mev", "edge": "edge_mae_mev",
                   "eig_mae": "eig_mae_mev", "eig_mae_occ": "eig_mae_occ_mev", "eig_mae_ef2": "eig_mae_ef2_mev"}


def compare_column(metric: str) -> str:
    """Leaderboard column of a --metric name (a short name of COMPARE_METRICS or any column)."""
    return COMPARE_METRICS.get(metric, metric)


@dataclass
class Comparison:
    """Models x datasets: for each dataset its main comparison class, the default groups in it."""

    column: str
    datasets: list[str]
    classes: dict[str, tuple[str, str]]          # dataset -> (recipe, budget) shown
    cells: dict[tuple[str, str], Group]          # (model label, dataset) -> group
    models: list[str]
    others: dict[str, list[tuple[tuple[str, str], int]]]  # dataset -> other classes (class, n models)
    pseudo: dict[tuple[str, str], bool]          # (model, dataset) -> figure is from eig(H) without S

    def value(self, model: str, dataset: str) -> tuple[float | None, float | None, int]:
        g = self.cells.get((model, dataset))
        if g is None:
            return None, None, 0
        col = ("pseudo_" + self.column) if self.pseudo.get((model, dataset)) else self.column
        return g.mean(col), g.std(col), len(g.values(col))

    def rank(self, dataset: str) -> dict[str, int]:
        """1-based rank of each model within a dataset (ascending metric, competition ranking)."""
        vals = {m: self.value(m, dataset)[0] for m in self.models}
        vals = {m: v for m, v in vals.items() if v is not None}
        ordered = sorted(vals.values())
        return {m: 1 + ordered.index(v) for m, v in vals.items()}


def model_label(group: Group) -> str:
    model, preset = group.config[0], group.config[1]
    return model if preset in ("", "cpu") else f"{model}:{preset}"


def build_comparison(directory: str | Path = "leaderboards", metric: str = "total") -> Comparison:
    """The comparison over every leaderboards/<dataset>.csv.

    Per dataset the class shown is the (recipe, budget) with the most models among default runs
    (ties: most runs, then the class of the newest row); the others are listed, not mixed in.
    """
    column = compare_column(metric)
    paths = sorted(Path(directory).glob("*.csv"))
    if not paths:
        raise ZooError(f"{directory}: no leaderboard CSVs (run `zoo bench` first)")
    datasets, classes, cells, others, pseudo = [], {}, {}, {}, {}
    models: list[str] = []
    known_column = False
    for path in paths:
        cols, raw = read_rows(path)
        known_column |= column in cols
        rows = [_display_row(r) for r in raw]
        name = next((r.get("dataset") for r in raw if r.get("dataset")), path.stem)
        groups = [g for g in group_rows(rows) if not g.ablation]
        if not groups:
            continue
        by_cls: dict = {}
        for g in groups:
            by_cls.setdefault(g.cls, []).append(g)

        def score(item):
            cls, gs = item
            newest = max((r.get("date") or "") for g in gs for r in g.rows)
            return (len({model_label(g) for g in gs}), sum(g.n for g in gs), newest)

        main_cls, main = max(by_cls.items(), key=score)
        datasets.append(name)
        classes[name] = main_cls
        others[name] = [(c, len({model_label(g) for g in gs})) for c, gs in by_cls.items() if c != main_cls]
        for g in main:
            lab = model_label(g)
            if (lab, name) in cells and cells[lab, name].n >= g.n:
                continue  # two default configurations of one preset (e.g. partition on/off): keep the larger
            cells[lab, name] = g
            pseudo[lab, name] = column not in g.rows[0] and ("pseudo_" + column) in g.rows[0]
            if lab not in models:
                models.append(lab)
    if not known_column:
        raise ZooError(f"no leaderboard in {directory} has column {column!r}; --metric takes "
                       f"{', '.join(COMPARE_METRICS)} or a column name")
    return Comparison(column, datasets, classes, cells, sorted(models), others, pseudo)


def class_label(cls: tuple[str, str]) -> str:
    recipe, budget = cls
    return f"{budget or 'no budget'}; recipe {recipe}"


def render_comparison(comp: Comparison, fmt: str = "md") -> str:
    """Models x datasets table: mean ± std over seeds (n), rank within each dataset (#1 in bold)."""
    from tabulate import tabulate

    ranks = {d: comp.rank(d) for d in comp.datasets}
    if fmt == "csv":  # long form for scripts: one line per (model, dataset)
        cols = ["model", "dataset", "metric", "mean", "std", "n", "rank", "spectrum", "budget", "recipe"]
        out = _line({c: c for c in cols}, cols)
        for d in comp.datasets:
            for m in comp.models:
                mean, sd, n = comp.value(m, d)
                if mean is not None:
                    out += _line({"model": m, "dataset": d, "metric": comp.column, "mean": mean, "std": sd, "n": n,
                                  "rank": ranks[d][m], "spectrum": "H only" if comp.pseudo.get((m, d)) else "",
                                  "budget": comp.classes[d][1], "recipe": comp.classes[d][0]}, cols)
        return out
    if fmt != "md":
        raise ZooError(f"unknown comparison format {fmt!r} (md or csv)")
    table = []
    for m in comp.models:
        line = [m]
        for d in comp.datasets:
            mean, sd, n = comp.value(m, d)
            if mean is None:
                line.append("")
                continue
            v = _g4(mean) + (f" ± {_g4(sd)}" if sd is not None else "") + f" (n={n}) #{ranks[d][m]}"
            if comp.pseudo.get((m, d)):
                v += " H-only"
            if ranks[d][m] == 1 and fmt == "md":
                v = f"**{v}**"
            line.append(v)
        table.append(line)
    headers = [comp.column] + comp.datasets
    text = tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
    notes = ["cells: mean ± sample std over seeds (n runs), #rank within the dataset; default preset runs only "
             "(ablations are in `zoo leaderboard DATASET`)",
             "per dataset, the comparison class shown: "
             + "; ".join(f"{d}: {class_label(comp.classes[d])}" for d in comp.datasets)]
    if any(comp.pseudo.values()):
        notes.append("H-only: the figure is from eig(H) without S (pseudo-spectrum), not orbital energies")
    extra = [f"{d}: {class_label(c)} ({k} model{'s' * (k != 1)})" for d in comp.datasets for c, k in comp.others[d]]
    if extra:
        notes.append("also on record, not comparable with the columns above (other budget or recipe): "
                     + "; ".join(extra))
    return text + "".join("\n\n" + n for n in notes)
