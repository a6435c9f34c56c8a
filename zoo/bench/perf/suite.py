"""`zoo perf`: the options, their checks, and the run of the chosen sections in one go."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from zoo.errors import ConfigError

SUITES = ("inference", "training", "throughput")
#: the catalogue size whose cutoff training and throughput use, per preset: the regime the preset is sized for
TRAIN_SIZE = {"cpu": "small", "paper": "paper"}


@dataclass
class PerfOptions:
    """Everything `zoo perf` takes; None means the family's or the preset's value (see `resolve`)."""

    suites: str = ",".join(SUITES)
    models: str | None = None  # comma-separated; None: every default backbone (backbones.default_models)
    preset: str = "cpu"
    sizes: str = "1k,3k,10k,30k"
    cutoff: float | None = None  # inference; None: a-hfo2's paper cutoff
    base_cell: str = "small"  # catalogue size of the a-hfo2 cell that is repeated
    structure: str | None = None  # or any structure file as the base cell
    cache: str | None = None
    max_atoms_per_part: int = 2000
    train_atoms: int = 1000
    throughput_atoms: int | None = None  # None: the smallest supercell wider than 2 x the training cutoff
    train_cutoff: float | None = None  # training and throughput; None: the cutoff of TRAIN_SIZE[preset]
    slices: str = "1,2,4,8,16"
    partitioners: str = "slices,rcb,metis"
    epochs: int = 2
    repeats: int = 2
    threads: int = 1
    max_seconds: float | None = 300.0
    json: str | None = None
    workdir: str | None = None
    profile: str | None = None  # a backbone: run the profiler on it instead of the sections
    profile_atoms: int | None = None  # None: as throughput_atoms
    top: int = 25
    quiet: bool = False


def _ints(text: str, what: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} expects comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise ConfigError(f"{what} expects positive integers, got {text!r}")
    return sorted(set(out))


def _names(text: str, known, what: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in known]
    if bad or not names:
        raise ConfigError(f"{what}: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def _stderr(msg: str) -> None:
    print(f"zoo perf: {msg}", file=sys.stderr, flush=True)


def run_perf(opts: PerfOptions, log: Callable[[str], None] | None = None) -> dict:
    """Check every option, run the chosen sections (or the profile), print the tables, write --json.

    Bad input (unknown model or section, sizes the cutoff does not allow, ...) is a ConfigError or
    ModelError before anything is measured. `max_seconds` 0 or None: no limit per measurement."""
    from zoo.bench.perf.backbones import parse_models, preset_hparams
    from zoo.bench.perf.family import (Family, base_cell, choose_repeat, family_defaults, parse_sizes, slab_repeat,
                                       supercells, write_supercell)
    from zoo.bench.perf.report import machine, render, write_json
    from zoo.bench.perf.training import PARTITIONERS

    log = log or ((lambda msg: None) if opts.quiet else _stderr)
    suites = [] if opts.profile else _names(opts.suites, SUITES, "--suite")
    models = parse_models(opts.profile or opts.models)
    for name in models:
        preset_hparams(name, opts.preset)  # ConfigError now for a preset the backbone lacks
    sizes = parse_sizes(opts.sizes)
    slices = _ints(opts.slices, "--slices")
    partitioners = _names(opts.partitioners, tuple(PARTITIONERS), "--partitioners")
    for what, v in (("--threads", opts.threads), ("--epochs", opts.epochs), ("--repeats", opts.repeats),
                    ("--max-atoms-per-part", opts.max_atoms_per_part), ("--top", opts.top),
                    ("--train-atoms", opts.train_atoms)):
        if int(v) < 1:
            raise ConfigError(f"{what} must be at least 1, got {v}")
    paper_cutoff, basis = family_defaults("paper")
    cutoff = float(opts.cutoff or paper_cutoff)
    train_cutoff = float(opts.train_cutoff or family_defaults(TRAIN_SIZE.get(opts.preset, "paper"))[0])
    cell, source = base_cell(opts.base_cell, opts.structure, opts.cache, progress=not opts.quiet)
    family = Family(cell, source, cutoff, basis)
    family.info()  # an element the basis lacks fails here
    # every structure is sized now, so sizes the cutoffs do not allow fail before any measurement
    if "inference" in suites:
        supercells(cell, sizes, cutoff)
    train_reps = slab_repeat(cell, opts.train_atoms, train_cutoff) if "training" in suites else None
    small_reps = choose_repeat(cell, opts.profile_atoms if opts.profile else opts.throughput_atoms, train_cutoff)
    max_seconds = opts.max_seconds or None
    result: dict = {
        "machine": machine(opts.threads),
        "options": {**asdict(opts), "models": models, "cutoff": cutoff, "train_cutoff": train_cutoff},
        "family": {"source": source, "atoms": cell.n_atoms, "basis": basis},
    }
    t0 = time.perf_counter()
    if opts.profile:
        from zoo.bench.perf.profile import profile_backbone

        result["profile"] = profile_backbone(models[0], family, small_reps, preset=opts.preset, cutoff=train_cutoff,
                                             top=opts.top, threads=opts.threads)
    with tempfile.TemporaryDirectory(prefix="zoo-perf-", dir=opts.workdir) as tmp:
        work = Path(tmp)
        common = {"preset": opts.preset, "threads": opts.threads, "max_seconds": max_seconds, "log": log}
        if "inference" in suites:
            from zoo.bench.perf.inference import run_inference

            result["inference"] = run_inference(models, family, sizes, work,
                                                max_atoms_per_part=opts.max_atoms_per_part, **common)
        if "training" in suites:
            from zoo.bench.perf.training import run_training

            path, result["train_cell"] = write_supercell(cell, train_reps, train_cutoff, work / "train.extxyz")
            result["training"] = run_training(models, family, path, cutoff=train_cutoff, slices=slices,
                                              partitioners=partitioners, epochs=opts.epochs, **common)
        if "throughput" in suites:
            from zoo.bench.perf.throughput import run_throughput

            path, result["throughput_cell"] = write_supercell(cell, small_reps, train_cutoff, work / "small.extxyz")
            result["throughput"] = run_throughput(models, family, path, cutoff=train_cutoff, repeats=opts.repeats,
                                                  **common)
    result["seconds"] = time.perf_counter() - t0
    print(render(result))
    if opts.json:
        write_json(opts.json, result)
        log(f"wrote {opts.json}")
    return result
