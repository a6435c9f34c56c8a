"""Tables and the JSON file of `zoo perf`: every table is headed by the machine and the commit."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

# (header, key, format); a row whose status is not "ok" shows its status instead of the measured cells
Column = tuple[str, str, str]

INFERENCE = [("model", "model", "s"), ("atoms", "atoms", ",d"), ("supercell", "repeat", "s"), ("edges", "edges", ",d"),
             ("parts", "parts", "d"), ("wall s", "wall_s", ".2f"), ("CPU s", "cpu_s", ".2f"),
             ("CPU us/atom", "us_per_atom", ".0f"), ("peak RSS MB", "peak_rss_mb", ".0f"),
             ("start RSS MB", "start_rss_mb", ".0f")]
INFERENCE_SUMMARY = [("model", "model", "s"), ("sizes", "sizes", "d"),
                     ("time exponent (goal 1.0)", "time_exponent", ".2f"),
                     ("memory flatness (goal <= 1.2)", "memory_flatness", ".2f"),
                     ("flatness above start RSS", "memory_flatness_above_start", ".2f")]
TRAINING = [("model", "model", "s"), ("config", "config", "s"), ("CPU s/epoch", "cpu_epoch_s", ".3f"),
            ("time vs full", "time_ratio", ".2f"), ("wall s/epoch", "wall_epoch_s", ".3f"),
            ("peak RSS MB", "peak_rss_mb", ".0f"), ("RSS vs full", "memory_ratio", ".2f"),
            ("autograd MB", "saved_mb", ".1f"), ("autograd vs full", "saved_ratio", ".2f"),
            ("halo/labelled atoms", "halo_per_labelled", ".2f"), ("edge overhead", "edge_overhead", ".2f"),
            ("imbalance", "imbalance", ".2f")]
THROUGHPUT = [("model", "model", "s"), ("params", "params", ",d"), ("edges", "edges", ",d"),
              ("forward ms", "forward_ms", ".1f"), ("forward edges/s", "forward_edges_per_s", ",.0f"),
              ("fwd+bwd ms", "forward_backward_ms", ".1f"), ("fwd+bwd edges/s", "forward_backward_edges_per_s", ",.0f"),
              ("fwd+bwd cost vs cheapest", "cost_vs_cheapest", ".1f"), ("peak RSS MB", "peak_rss_mb", ".0f")]
PROFILE = [("op", "op", "s"), ("self CPU ms", "self_cpu_ms", ".2f"), ("self %", "self_pct", ".1f"),
           ("CPU total ms", "cpu_total_ms", ".2f"), ("calls", "calls", "d")]


def machine(threads: int) -> dict:
    """CPU model, cores, threads per measurement, torch version and the zoo commit."""
    import torch

    from zoo.bench.run import cpu_model, git_commit

    return {"cpu": cpu_model(), "cores": os.cpu_count() or 0, "threads": int(threads), "torch": torch.__version__,
            "commit": git_commit()}


def machine_line(m: dict) -> str:
    return (f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} thread(s) per measurement; "
            f"torch {m['torch']}; zoo commit {m['commit']}")


#: columns that name a row: shown even when the row did not run
IDENTITY = ("model", "config", "atoms", "repeat", "parts", "op")


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str) or fmt == "s":
        return str(value)
    return format(int(value) if fmt.endswith("d") else float(value), fmt)


def table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """tabulate (github style) of `rows`; a row that did not run keeps its identity and says why."""
    from tabulate import tabulate

    failed = any(r.get("status", "ok") != "ok" for r in rows)
    body = []
    for r in rows:
        ok = r.get("status", "ok") == "ok"
        cells = [_cell(r.get(key), fmt) if ok or key in IDENTITY else "-" for _, key, fmt in columns]
        body.append(cells + ([r.get("status", "ok")] if failed else []))
    headers = [h for h, _, _ in columns] + (["status"] if failed else [])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def _inference(result: dict) -> list[str]:
    from zoo.bench.perf.inference import MEMORY_REFERENCE_ATOMS

    inf, opts, fam = result["inference"], result["options"], result["family"]
    return [f"## inference: zoo predict's streamed path (exact RCB partitions of <= {opts['max_atoms_per_part']} "
            f"atoms, hermitized, HDF5), {fam['source']} ({fam['atoms']} atoms) repeated, cutoff {opts['cutoff']:g} A, "
            f"basis {fam['basis']}, preset {opts['preset']}, untrained float32 models; one fresh process per row; "
            f"CPU = process CPU time of the prediction", "", table(inf["rows"], INFERENCE), "",
            f"time exponent: least-squares slope of log CPU time vs log N; memory flatness: peak RSS of the largest "
            f"size / that of the size nearest {MEMORY_REFERENCE_ATOMS:,} atoms", "",
            table(inf["summary"], INFERENCE_SUMMARY)]


def _training(result: dict) -> list[str]:
    tr, opts, c = result["training"], result["options"], result["train_cell"]
    out = [f"## training: one epoch = forward + masked MSE + backward over every partition in turn, one Adam step; "
           f"{c['atoms']}-atom cell ({c['repeat']} of the base cell, {' x '.join(map(str, c['widths_A']))} A), cutoff "
           f"{c['cutoff']:g} A, slabs along the long axis, halo = the backbone's message-passing depth; fastest of "
           f"{opts['epochs']} epochs in process CPU time; one fresh process per row; ratios = configuration / full "
           f"graph", "", table(tr["rows"], TRAINING)]
    for t in tr["partitioners"]:
        cols = [("parts", "parts", "d")] + [(f"{p} {what}", f"{p} {what}", ".2f")
                                            for what in ("imbalance", "halo/labelled") for p in t["partitioners"]]
        out += ["", f"### load imbalance (max / mean edges per partition) and halo atoms per labelled atom: halo "
                    f"depth K = {t['hops']} ({t['hops'] + 1} rings), flow {t['flow']}: {', '.join(t['models'])}", "",
                table(t["rows"], cols)]
    return out


def _throughput(result: dict) -> list[str]:
    c, opts = result["throughput_cell"], result["options"]
    rows = [{**r, "forward_ms": 1e3 * r["forward_s"], "forward_backward_ms": 1e3 * r["forward_backward_s"]}
            if r["status"] == "ok" else r for r in result["throughput"]["rows"]]
    return [f"## throughput: full graph of a {c['atoms']}-atom cell ({c['repeat']} of the base cell), cutoff "
            f"{c['cutoff']:g} A, preset {opts['preset']}; fastest of {opts['repeats']} in process CPU time; edges per "
            f"CPU-second", "", table(rows, THROUGHPUT)]


def _profile(result: dict) -> list[str]:
    p = result["profile"]
    return [f"## profile: {p['model']} (preset {p['preset']}, {p['params']:,} parameters), one forward + masked MSE + "
            f"backward, {p['atoms']} atoms, {p['edges']:,} edges, cutoff {p['cutoff']:g} A; "
            f"{p['self_cpu_total_ms']:.0f} ms self CPU in all; top {len(p['ops'])} ops by self CPU time", "",
            table(p["ops"], PROFILE)]


SECTIONS = {"inference": _inference, "training": _training, "throughput": _throughput, "profile": _profile}


def render(result: dict) -> str:
    """Every table of a `run_perf` result, each headed by its section's conditions and the machine line."""
    m = machine_line(result["machine"])
    out = []
    for key, section in SECTIONS.items():
        if key in result:
            lines = section(result)
            out += [lines[0], m, *lines[1:], ""]
    return "\n".join(out)


def write_json(path: str | Path, result: dict) -> None:
    """Atomically (temp file + rename), NaN as null."""
    from zoo.data.format import atomic_write

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    text = json.dumps(clean(result), indent=1)
    atomic_write(Path(path), lambda p: p.write_text(text + "\n"), suffix=".json")
