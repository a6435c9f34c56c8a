"""`zoo bench`: train on the train split, schedule on val, score the unseen test structures as
full graphs, write a run folder and append one leaderboard row.

Run folder runs/<dataset>/<model>-<timestamp>/: config.json, checkpoint.pt, metrics.json,
history.json, report_data.npz and the report PNGs. A run that diverges (NaN loss) leaves
error.txt in its folder and no leaderboard row.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from zoo.bench import ddp
from zoo.bench.evaluate import evaluate
from zoo.bench.trainer import DTYPES, TrainConfig, Trainer, TrainingDiverged, resolve_device, seed_everything
from zoo.data.format import Dataset, atomic_write
from zoo.errors import ConfigError, ZooError

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"


@dataclass
class BenchOptions:
    model: str
    dataset: str
    preset: str = "cpu"
    seed: int = 0
    max_epochs: int | None = None
    time_budget_min: float | None = None
    cpu_budget_min: float | None = None  # process CPU minutes (--cpu-budget)
    partitioner: str | None = None  # None: the preset's partition section; "none": full graphs
    t_slice: float | None = None
    n_parts: int | None = None
    virtual: str | None = None  # none | one-way | two-way (default one-way)
    halo_hops: int | None = None  # halo built for this many MP layers (default: the model's; ablations)
    overrides: Sequence[str] = ()
    leaderboard_dir: str = "leaderboards"
    runs_dir: str = "runs"
    size: str | None = None  # None: the name's @size, else small
    resume: str | None = None
    quiet: bool = False
    eig_max_orbitals: int = 6000
    extra: dict = field(default_factory=dict)


# -- configuration -------------------------------------------------------------------------

def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def build_config(model: str, preset: str, overrides: Sequence[str] = (), max_epochs: int | None = None,
                 time_budget_min: float | None = None,
                 cpu_budget_min: float | None = None) -> tuple[dict, TrainConfig]:
    """(model hyper-parameters, training config) from a preset plus CLI overrides.

    `--set key=value` goes to the training section if `key` is a training field, else to the
    model's hyper-parameters; `train.key` / `model.key` say so explicitly. Unknown keys are errors.
    A CLI budget (max_epochs, time_budget_min or cpu_budget_min; at most one) replaces the preset's
    budgets; budgets set with `--set` add to them.
    """
    from zoo.models.registry import check_hparams, hparam_names, load_preset, model_class

    cls = model_class(model)
    p = load_preset(model, preset)
    train = dict(p.pop("train", None) or {})
    p.pop("partition", None)
    hp = dict(p)
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    model_keys = set(hparam_names(cls))
    for item in overrides:
        key, value = _parse_override(item)
        section, _, bare = key.rpartition(".")
        if section == "train" or (not section and bare in train_keys):
            if bare not in train_keys:
                raise ConfigError(f"--set {key}: unknown training key; known: {sorted(train_keys)}")
            train[bare] = value
        elif section == "model" or (not section and bare in model_keys):
            if bare not in model_keys:
                raise ConfigError(f"--set {key}: unknown hyper-parameter of {model!r}; known: {sorted(model_keys)}")
            hp[bare] = value
        else:
            raise ConfigError(f"--set {key}: not a training key ({sorted(train_keys)}) nor a hyper-parameter "
                              f"of {model!r} ({sorted(model_keys)})")
    given = [k for k, v in (("--max-epochs", max_epochs), ("--time-budget", time_budget_min),
                            ("--cpu-budget", cpu_budget_min)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"give one of --max-epochs, --time-budget, --cpu-budget, not {' and '.join(given)}")
    if max_epochs is not None:
        train["max_epochs"], train["time_budget_min"], train["cpu_budget_min"] = int(max_epochs), None, None
    if time_budget_min is not None:
        train["time_budget_min"], train["max_epochs"], train["cpu_budget_min"] = float(time_budget_min), 10**9, None
    if cpu_budget_min is not None:
        train["cpu_budget_min"], train["max_epochs"], train["time_budget_min"] = float(cpu_budget_min), 10**9, None
    check_hparams(cls, hp, where=f"{model}:{preset}")
    return hp, TrainConfig.from_dict(train, where=f"{model}:{preset}:train")


PARTITION_KEYS = ("partitioner", "t_slice", "n_parts", "virtual", "halo_hops")


def resolve_partition(opts: BenchOptions, periodic: bool = True) -> dict | None:
    """Partitioning of the train split: CLI options over the preset's `partition:` section.

    Returns None for full-graph training (no section and no --partitioner, or --partitioner none).
    A preset's section applies to periodic datasets only (slicing a molecule is meaningless);
    an explicit --partitioner always applies.
    """
    from zoo.models.registry import load_preset

    section = dict(load_preset(opts.model, opts.preset).get("partition") or {})
    unknown = sorted(set(section) - set(PARTITION_KEYS))
    if unknown:
        raise ConfigError(f"{opts.model}:{opts.preset}: unknown partition key(s) {unknown}; known: {list(PARTITION_KEYS)}")
    if opts.partitioner is not None:
        if opts.partitioner == "none":
            return None
        section = {"partitioner": opts.partitioner}
    elif not periodic:
        section = {}
    for key in ("t_slice", "n_parts", "virtual", "halo_hops"):
        if getattr(opts, key) is not None:
            section[key] = getattr(opts, key)
    if not section.get("partitioner"):
        if any(section.get(k) is not None for k in ("t_slice", "n_parts", "virtual", "halo_hops")):
            raise ConfigError("--t-slice / --n-parts / --virtual / --halo-hops need a partitioner "
                              "(--partitioner slices, or a preset with a partition section)")
        return None
    section.setdefault("virtual", "one-way")
    return section


def partition_label(part: dict | None) -> str:
    if part is None:
        return ""
    size = part.get("t_slice") or part.get("n_parts") or ""
    label = f"{part['partitioner']}:{size}:{part['virtual']}"
    return label + (f":halo{part['halo_hops']}" if part.get("halo_hops") is not None else "")


def hparam_hash(model: str, hparams: dict, cfg: TrainConfig) -> str:
    t = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_SAFE_KEYS}
    # keys added later enter the hash only when set, so rows of earlier runs keep their hash
    for key, default in (("standardize", False), ("stages", None)):
        if t.get(key) == default:
            t.pop(key, None)
    blob = json.dumps({"model": model, "hparams": hparams, "train": t}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def budget_string(cfg: TrainConfig) -> str:
    parts = []
    if cfg.max_epochs < 10**9:
        parts.append(f"epochs={cfg.max_epochs}")
    if cfg.time_budget_min is not None:
        parts.append(f"time={cfg.time_budget_min:g}min")
    if cfg.cpu_budget_min is not None:
        parts.append(f"cpu={cfg.cpu_budget_min:g}min")
    return ",".join(parts)


#: training keys `--set` may change on `--resume` (budgets and device); any other is refused
RESUME_SAFE_KEYS = ("max_epochs", "time_budget_min", "cpu_budget_min", "device")


def resume_overrides(cfg: TrainConfig, overrides: Sequence[str], where: str) -> TrainConfig:
    """Apply `--set` on `--resume`: budgets and device change, anything else is refused by name
    (the run's hyper-parameters, loss, lr, stages... were fixed when it started)."""
    refused, changes = [], {}
    for item in overrides:
        key, value = _parse_override(item)
        section, _, bare = key.rpartition(".")
        if section in ("", "train") and bare in RESUME_SAFE_KEYS:
            changes[bare] = value
        else:
            refused.append(key)
    if refused:
        raise ConfigError(f"{where}: --set on --resume can change only {list(RESUME_SAFE_KEYS)}; refusing "
                          f"{refused} (fixed when the run started: start a new run to change them)")
    if not changes:
        return cfg
    new = TrainConfig.from_dict({**cfg.to_dict(), **changes}, where=f"{where}: --set")
    return new


# -- provenance ----------------------------------------------------------------------------

def git_commit() -> str:
    """HEAD of the zoo source checkout ('+dirty' if the package's tracked files differ from it),
    or 'unknown' (installed from a wheel, no git, ...)."""
    import zoo

    pkg = Path(zoo.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pkg, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=pkg,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    if out.returncode != 0 or not sha:
        return "unknown"
    return sha + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware(device: torch.device) -> dict:
    dev = str(device)
    if device.type == "cuda":
        dev = torch.cuda.get_device_name(device)
    return {"cpu": cpu_model(), "cores": os.cpu_count() or 0, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": dev}


# -- data ----------------------------------------------------------------------------------

def resolve_dataset(name_or_path: str, size: str | None = None) -> Dataset:
    """A dataset directory, or a catalogue name (built on first use)."""
    path = Path(name_or_path)
    if path.exists():
        return Dataset.open(path)
    try:
        from zoo.data import catalogue
    except ImportError:
        raise ZooError(f"{name_or_path!r} is not a dataset directory and the dataset catalogue "
                       f"(zoo.data.catalogue) is not available in this build") from None
    return Dataset.open(catalogue.ensure_built(name_or_path, size=size))


def dataset_info_json(info) -> dict:
    return {"layout": info.layout.to_json(), "cutoff": info.cutoff, "spinful": info.spinful,
            "has_overlap": info.has_overlap, "name": info.name}


def dataset_info_from_json(obj: dict):
    from zoo.data.torch_data import DatasetInfo
    from zoo.physics.basis import OrbitalLayout

    return DatasetInfo(OrbitalLayout.from_json(obj["layout"]), float(obj["cutoff"]), bool(obj["spinful"]),
                       bool(obj["has_overlap"]), str(obj.get("name", "")))


def training_graphs(ds: Dataset, split: str, layout, dtype, part: dict | None = None, model=None) -> list:
    """Full graphs of a split, or their partitions (labelled/virtual masks set by the partitioner).

    `part` is `resolve_partition`'s mapping: partitioner, t_slice / n_parts, virtual and optionally
    halo_hops (build the halo for that many message-passing layers instead of the model's).
    """
    from zoo.data.torch_data import record_to_data

    graphs = []
    for rec in ds.records(split):
        data = record_to_data(rec, layout, dtype)
        if part is None:
            graphs.append(data)
            continue
        from zoo.data.partition import partition

        # halo depth and message direction come from the backbone, so partitioned outputs are exact,
        # unless halo_hops deliberately builds a shallower halo (the seed's 2-layer ablation)
        hops = part.get("halo_hops")
        hops = int(getattr(model, "message_passing_layers", 0)) if hops is None else int(hops)
        # explicit per-image blocks (CP2K's REAL_SPACE matrices, DeepH) may join one pair through several
        # images in a cell narrower than 2 x cutoff: each is its own labelled edge, and partitions stay exact
        # (features belong to atoms); Gamma-folded data keeps the check (there it means a too-small cell)
        parts = partition(data, part["partitioner"], hops=hops, virtual=part.get("virtual", "one-way"),
                          flow=getattr(model, "message_flow", "source_to_target"), t_slice=part.get("t_slice"),
                          n_parts=part.get("n_parts"), allow_self_images=ds.card.image_convention == "explicit")
        for k, p in enumerate(parts):
            p.name = f"{rec.name}#{k}"
        graphs += parts
    return graphs


# -- the run -------------------------------------------------------------------------------

def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=1, default=str, allow_nan=True)))


def _new_run_dir(runs_dir: str | Path, dataset: str, model: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir) / dataset / f"{model}-{stamp}"
    path, k = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            k += 1
            path = base.with_name(f"{base.name}-{k}")


def run_bench(opts: BenchOptions) -> dict:
    """Train, evaluate, write the run folder and the leaderboard row (rank 0). Returns the row."""
    from zoo.bench.leaderboard import append_row, leaderboard_path
    from zoo.bench.metrics import parameter_count, peak_memory_mb
    from zoo.bench.reports import render, save_report_data
    from zoo.data.torch_data import DatasetInfo
    from zoo.models.registry import build_model

    saved = None
    if opts.resume:
        run_dir = Path(opts.resume)
        cfg_path = run_dir / CONFIG_NAME
        if not cfg_path.is_file():
            raise ZooError(f"{run_dir}: not a run folder (no {CONFIG_NAME})")
        saved = json.loads(cfg_path.read_text())
        opts = dataclasses.replace(opts, model=saved["model"], dataset=saved["dataset_arg"], preset=saved["preset"],
                                   seed=saved["seed"])
        part = saved["partition"]
        hp, cfg = saved["hparams"], TrainConfig.from_dict(saved["train"])
        if opts.max_epochs is not None or opts.time_budget_min is not None or opts.cpu_budget_min is not None:
            _, c2 = build_config(opts.model, opts.preset, (), opts.max_epochs, opts.time_budget_min,
                                 opts.cpu_budget_min)
            cfg.max_epochs, cfg.time_budget_min, cfg.cpu_budget_min = (c2.max_epochs, c2.time_budget_min,
                                                                       c2.cpu_budget_min)
        cfg = resume_overrides(cfg, opts.overrides, str(run_dir))
        run_overrides = list(saved.get("overrides", []))  # the row names the run's own overrides
    else:
        run_overrides = list(opts.overrides)
        hp, cfg = build_config(opts.model, opts.preset, opts.overrides, opts.max_epochs, opts.time_budget_min,
                               opts.cpu_budget_min)
        part = "unresolved"

    commit = git_commit()  # the code this run starts with
    device = resolve_device(cfg.device)
    ctx = ddp.setup(device)
    if ctx.distributed and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    try:
        ds = resolve_dataset(opts.dataset, opts.size)
        card_hash = ds.card.hash()
        info = DatasetInfo.from_dataset(ds)
        dtype = DTYPES[cfg.dtype]
        if part == "unresolved":
            part = resolve_partition(opts, periodic=bool(ds.read(ds.split("train")[0]).pbc.any()))
        if not opts.resume:
            run_dir = ddp.broadcast_object(
                str(_new_run_dir(opts.runs_dir, ds.name, opts.model)) if ctx.is_main else None, ctx)
            run_dir = Path(run_dir)
        seed_everything(opts.seed)
        model = build_model(opts.model, info, **hp)
        hops = int(getattr(model, "message_passing_layers", 0))
        train = training_graphs(ds, "train", info.layout, dtype, part, model)
        val = training_graphs(ds, "val", info.layout, dtype)
        from zoo.bench.stages import parse_stages

        # stages with `data: full` train on whole structures even when the preset partitions
        full_needed = part is not None and any(s.data == "full" for s in parse_stages(cfg))
        train_full = training_graphs(ds, "train", info.layout, dtype) if full_needed else None
        config = {"model": opts.model, "preset": opts.preset, "dataset": ds.name, "dataset_arg": str(opts.dataset),
                  "dataset_path": str(ds.path), "card_hash": card_hash, "seed": opts.seed, "hparams": hp,
                  "overrides": run_overrides,
                  "train": cfg.to_dict(), "partition": part, "hops": hops, "world_size": ctx.world_size,
                  "info": dataset_info_json(info), "n_train_graphs": len(train), "n_val_graphs": len(val)}
        if ctx.is_main and not opts.resume:
            _write_json(run_dir / CONFIG_NAME, config)
        # standardize: the checkpoint's model is a zoo.bench.standardize.Standardized wrapper
        meta = {"model": opts.model, "hparams": hp, "info": dataset_info_json(info), "dataset": ds.name,
                "preset": opts.preset, "standardize": cfg.standardize}
        trainer = Trainer(model, train, val, cfg, seed=opts.seed,
                          run_dir=run_dir, card_hash=card_hash, meta=meta, ctx=ctx, device=device, quiet=opts.quiet,
                          train_full=train_full)
        try:
            result = trainer.fit(resume=bool(opts.resume))
        except TrainingDiverged as exc:
            if ctx.is_main:
                (run_dir / "error.txt").write_text(str(exc) + "\n")
            raise
        if not ctx.is_main:
            return {}
        trainer.use_best()
        metrics, report = evaluate(trainer.model, ds, info, device, dtype, seed=opts.seed,
                                   eig_max_orbitals=opts.eig_max_orbitals)
        metrics.update({"params": parameter_count(trainer.model), "time_per_epoch_s": result.time_per_epoch_s,
                        "train_time_s": result.train_time_s, "train_cpu_s": result.cpu_time_s,
                        "peak_mem_mb": peak_memory_mb(device),
                        "best_val_loss": result.best_val})
        _write_json(run_dir / "history.json", result.history)
        _write_json(run_dir / METRICS_NAME, {"metrics": metrics, "distance_profile": {
            "bins": report["dist_bins"].tolist(), "mae_mev": report["dist_mae_mev"].tolist(),
            "count": report["dist_count"].tolist()}, "notes": report["notes"].tolist()})
        save_report_data(run_dir, report)
        render(run_dir)
        lot = ds.card.level_of_theory
        row = {"run_id": run_dir.name, "date": _dt.datetime.now().isoformat(timespec="seconds"),
               "model": opts.model, "preset": opts.preset, "hparam_hash": hparam_hash(opts.model, hp, cfg),
               "dataset": ds.name, "card_hash": card_hash, "recipe_hash": ds.card.recipe_hash(),
               "overrides": " ".join(run_overrides),
               "level_of_theory": ";".join(f"{k}={lot[k]}" for k in sorted(lot)),
               "seed": opts.seed, "budget": budget_string(cfg), "epochs_run": result.epochs_run,
               "stop_reason": result.stop_reason,
               "partitioner": partition_label(part),
               "world_size": ctx.world_size, "git_commit": commit, **hardware(device), **metrics}
        append_row(leaderboard_path(ds.name, opts.leaderboard_dir), row)
        _write_json(run_dir / "row.json", row)
        row["run_dir"] = str(run_dir)
        return row
    finally:
        ddp.teardown(ctx)
