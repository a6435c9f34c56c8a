"""The trainer: masked or model-owned losses, Adam / AdamW / Adan, ReduceLROnPlateau with a minimum-lr stop
or a cosine sized to the budget (`zoo.bench.schedule`), training stages, epoch / wall-time / CPU-time
budgets, gradient clipping, atomic per-epoch checkpoints, exact resume and DDP.

Loss of a step: (S, C) = the backbone's `loss_terms(pred, batch)` when it returns a pair, else the
stage's masked harness loss; the objective is f(S/C) with f = `loss_outer` (model-owned) or the
harness loss's outer function (S and C may be K-vectors: f then takes the K means), plus the stage's
extra terms sum_k w_k S_k/C_k (`zoo.bench.stages`).
S and C are summed over DDP ranks before dividing and the backward pass uses the surrogate
f'(S/C) s_rank / C (f' by autograd for a model-owned f), so W ranks give the single-process gradient.
With `standardize: true` the model is wrapped in `zoo.bench.standardize.Standardized` and every loss
is evaluated on its standardized view.

Determinism: the model is built after seeding; the order of training graphs in epoch e is a
permutation drawn from a generator seeded with (seed, e) alone, so a resumed run replays the
same batches as an uninterrupted one, and optimizer/scheduler/RNG states, the stage index and
the epoch inside the stage travel in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from zoo.bench import ddp
from zoo.bench.losses import LOSSES, LossSpec, masked_sums, outer, outer_grad
from zoo.bench.optim import Adan
from zoo.bench.schedule import SCHEDULES, make_scheduler
from zoo.bench.stages import Stage, cumulative_shares, parse_stages, term_function
from zoo.bench.standardize import Standardized
from zoo.data.format import atomic_write
from zoo.data.torch_data import collate
from zoo.errors import ConfigError, ZooError

CHECKPOINT_NAME = "checkpoint.pt"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
OPTIMIZERS = ("adam", "adamw", "adan")
#: TrainConfig keys added after runs were recorded, with the defaults that mean "as before"
_LATER_DEFAULTS = {"optimizer": "adam", "betas": None, "eps": 1e-8, "amsgrad": False, "schedule": "plateau"}


class TrainingDiverged(ZooError):
    """The loss became NaN or infinite; the run stops and writes no leaderboard row."""


@dataclass
class TrainConfig:
    """Training hyper-parameters (a preset's `train:` section; unknown keys are errors)."""

    lr: float = 1e-3
    min_lr: float = 1e-5
    lr_decay: float = 0.5
    patience: int = 10
    threshold: float = 1e-3
    max_epochs: int = 100
    time_budget_min: float | None = None
    batch_size: int = 1
    loss: str = "mse"
    offdiag_weight: float = 1.0
    focal_beta: float = 20.0
    focal_gamma: float = 1.0
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    dtype: str = "float32"
    device: str = "auto"
    cpu_budget_min: float | None = None  # process CPU time (time.process_time), summed over the run
    standardize: bool = False  # target standardization (zoo.bench.standardize)
    stages: list | None = None  # training stages (zoo.bench.stages); None: one stage, this section
    optimizer: str = "adam"  # adam (weight_decay = L2 term) | adamw | adan (decoupled decay; zoo.bench.optim)
    betas: list | None = None  # None: the optimizer's default, (0.9, 0.999) or Adan's (0.98, 0.92, 0.99)
    eps: float = 1e-8
    amsgrad: bool = False  # adam / adamw only
    schedule: str = "plateau"  # plateau: ReduceLROnPlateau + min-lr stop | cosine: lr -> min_lr over the budget

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "train") -> "TrainConfig":
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown training key(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        cfg.check(where)
        return cfg

    def check(self, where: str = "train") -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"{where}: unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"{where}: dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not (self.lr > 0 and self.min_lr >= 0 and 0 < self.lr_decay < 1):
            raise ConfigError(f"{where}: need lr > 0, min_lr >= 0 and 0 < lr_decay < 1")
        if self.max_epochs < 0 or self.batch_size < 1 or self.patience < 0:
            raise ConfigError(f"{where}: need max_epochs >= 0, batch_size >= 1, patience >= 0")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise ConfigError(f"{where}: time_budget_min must be positive")
        if self.cpu_budget_min is not None and self.cpu_budget_min <= 0:
            raise ConfigError(f"{where}: cpu_budget_min must be positive")
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"{where}: standardize must be true or false, got {self.standardize!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"{where}: unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.betas is not None:
            n = 3 if self.optimizer == "adan" else 2
            b = self.betas
            if (not isinstance(b, (list, tuple)) or len(b) != n
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in b)):
                raise ConfigError(f"{where}: betas for {self.optimizer} must be {n} numbers in [0, 1), got {b!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise ConfigError(f"{where}: eps must be a positive number, got {self.eps!r}")
        if not isinstance(self.amsgrad, bool):
            raise ConfigError(f"{where}: amsgrad must be true or false, got {self.amsgrad!r}")
        if self.amsgrad and self.optimizer == "adan":
            raise ConfigError(f"{where}: amsgrad applies to adam and adamw only, not adan")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{where}: unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}")
        if self.schedule == "cosine" and self.stages:
            raise ConfigError(f"{where}: schedule: cosine spans the whole budget and cannot be combined with stages "
                              f"(their lr restarts and min-lr stops belong to the plateau schedule)")
        if self.stages:
            parse_stages(self, where)

    def to_dict(self) -> dict:
        """The section as a preset would write it. The optimizer keys (added later) are left out
        at their defaults, so hashes of runs from before them keep their value."""
        d = dataclasses.asdict(self)
        for key, default in _LATER_DEFAULTS.items():
            if d.get(key) == default:
                d.pop(key)
        return d

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        """The configured optimizer. adam: torch Adam (weight_decay is an L2 term added to the
        gradient); adamw: torch AdamW (decoupled decay theta <- theta (1 - lr wd)); adan:
        zoo.bench.optim.Adan (decoupled, theta <- theta / (1 + lr wd))."""
        kw = {"lr": self.lr, "eps": self.eps, "weight_decay": self.weight_decay}
        if self.betas is not None:
            kw["betas"] = tuple(float(b) for b in self.betas)
        if self.optimizer == "adan":
            return Adan(params, **kw)
        cls = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return cls(params, amsgrad=self.amsgrad, **kw)

    def loss_spec(self) -> LossSpec:
        return LossSpec(self.loss, self.offdiag_weight, self.focal_beta, self.focal_gamma)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"bad device {name!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: Mapping) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(path: Path, state: Mapping) -> None:
    """torch.save to a temp file in the same directory, then rename: never a half-written checkpoint."""
    atomic_write(Path(path), lambda p: torch.save(dict(state), p), suffix=".pt")


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{path}: no checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which and why
        raise ZooError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None


@dataclass
class TrainResult:
    epochs_run: int
    stop_reason: str
    best_val: float
    history: list[dict] = field(default_factory=list)
    time_per_epoch_s: float = float("nan")
    train_time_s: float = 0.0
    cpu_time_s: float = 0.0


class Trainer:
    """Fits a backbone on lists of torch-geometric graphs (full structures or partitions).

    `train_full` (optional): the full training structures, for stages with `data: full` when
    `train` holds partitions (without it such stages use `train`). With `cfg.standardize` the
    model is wrapped in `Standardized`; `self.model` is then the wrapper (physical outputs).
    """

    def __init__(self, model: torch.nn.Module, train: Sequence, val: Sequence, cfg: TrainConfig, seed: int = 0,
                 run_dir: str | Path | None = None, card_hash: str = "", meta: Mapping | None = None,
                 ctx: ddp.DistContext | None = None, device: torch.device | None = None, quiet: bool = False,
                 train_full: Sequence | None = None):
        if not train:
            raise ZooError("no training graphs")
        self.cfg, self.seed, self.quiet = cfg, int(seed), quiet
        self.stages: list[Stage] = parse_stages(cfg, "train")
        self.shares = cumulative_shares(self.stages)
        self.ctx = ctx or ddp.DistContext()
        self.device = device or resolve_device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        if cfg.standardize and not isinstance(model, Standardized):
            model = Standardized(model)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.info = getattr(self.model, "info", None)
        self.train_graphs, self.val_graphs = list(train), list(val)
        self.train_full = None if train_full is None else list(train_full)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.card_hash, self.meta = card_hash, dict(meta or {})
        self.net = self.model  # the DDP wrapper while fit() runs distributed, else the model itself
        first = self.stages[0].cfg
        self.opt = first.make_optimizer(self.model.parameters())
        self.stage_index, self.stage_epoch = 0, 0
        self._configure_stage(0, restart=False)
        self.epoch = 0
        self.history: list[dict] = []
        self.best_val = float("inf")
        self.best_state: dict | None = None
        self.elapsed = 0.0
        self.cpu_elapsed = 0.0
        self._owned = False  # whether the model's loss_terms returned a loss (set by the first step)
        self._loss_components = 1  # length of the main loss's (sum, count) vectors (set by the first step)

    # -- stages --------------------------------------------------------------------------
    @property
    def stage(self) -> Stage:
        return self.stages[self.stage_index]

    def _configure_stage(self, k: int, restart: bool) -> None:
        """Loss, extra terms and a new scheduler for stage k; `restart` resets the lr to the stage's."""
        st = self.stages[k]
        self.stage_index = k
        self.spec = st.cfg.loss_spec()
        self.terms = [(t, term_function(t.term, f"train: stage {k + 1} ({st.name!r})")) for t in st.extra]
        if restart:
            for group in self.opt.param_groups:
                group["lr"], group["weight_decay"] = st.cfg.lr, st.cfg.weight_decay
        self.sched = make_scheduler(self.opt, st.cfg)

    def _start_stage(self, k: int) -> None:
        self.stage_epoch = 0
        self._configure_stage(k, restart=True)
        # the best weights are chosen by the last stage's own validation loss
        self.best_val, self.best_state = float("inf"), None

    def _stage_spent(self, st: Stage) -> bool:
        """Has stage `st` used its epochs or its (cumulative) share of a budget?"""
        if st.epochs is not None and self.stage_epoch >= st.epochs:
            return True
        share = self.shares[st.index]
        if share is None:
            return False
        cfg = self.cfg
        if self.epoch >= max(1, round(share * cfg.max_epochs)):
            return True
        if cfg.time_budget_min is not None and self.elapsed >= share * 60.0 * cfg.time_budget_min:
            return True
        return cfg.cpu_budget_min is not None and self.cpu_elapsed >= share * 60.0 * cfg.cpu_budget_min

    def _progress(self) -> float:
        """Fraction of the run's budget spent: the largest over the budgets that are set (and over DDP ranks,
        whose clocks differ, so every rank takes the same lr)."""
        cfg = self.cfg
        f = self.epoch / max(cfg.max_epochs, 1)
        if cfg.time_budget_min is not None:
            f = max(f, self.elapsed / (60.0 * cfg.time_budget_min))
        if cfg.cpu_budget_min is not None:
            f = max(f, self.cpu_elapsed / (60.0 * cfg.cpu_budget_min))
        return ddp.all_max(f, self.ctx, self.device)

    def _stage_graphs(self) -> list:
        if self.stage.data == "full" and self.train_full is not None:
            return self.train_full
        return self.train_graphs

    # -- checkpoints -------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / CHECKPOINT_NAME

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng": _rng_state(), "epoch": self.epoch,
                "stage_index": self.stage_index, "stage_name": self.stage.name, "stage_epoch": self.stage_epoch,
                "card_hash": self.card_hash, "history": self.history, "best_val": self.best_val,
                "best_model": self.best_state, "elapsed": self.elapsed, "cpu_elapsed": self.cpu_elapsed,
                "seed": self.seed, "train_config": self.cfg.to_dict(), "meta": self.meta}

    def load_state(self, ckpt: Mapping, where: str = "checkpoint") -> None:
        if ckpt.get("card_hash") != self.card_hash:
            raise ZooError(f"{where}: checkpoint was trained on dataset card {ckpt.get('card_hash')!r} but this "
                           f"dataset's card hash is {self.card_hash!r}; refusing to resume on a different dataset")
        k = int(ckpt.get("stage_index", 0))
        if k >= len(self.stages):
            raise ZooError(f"{where}: checkpoint is in stage {k + 1} but the configuration has "
                           f"{len(self.stages)} stage(s)")
        saved_opt = dict(ckpt.get("train_config") or {}).get("optimizer", "adam")
        if saved_opt != self.cfg.optimizer:
            raise ZooError(f"{where}: checkpoint was trained with optimizer {saved_opt!r} but the configuration "
                           f"says {self.cfg.optimizer!r}; its state cannot continue another optimizer")
        saved_sched = dict(ckpt.get("train_config") or {}).get("schedule", "plateau")
        if saved_sched != self.cfg.schedule:
            raise ZooError(f"{where}: checkpoint was trained with schedule {saved_sched!r} but the configuration "
                           f"says {self.cfg.schedule!r}; its scheduler state cannot continue another schedule")
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self._configure_stage(k, restart=False)  # the stage's scheduler, then its saved state
        self.sched.load_state_dict(ckpt["scheduler"])
        self.stage_epoch = int(ckpt.get("stage_epoch", ckpt["epoch"]))
        _set_rng_state(ckpt["rng"])
        self.epoch, self.history = int(ckpt["epoch"]), list(ckpt["history"])
        self.best_val, self.best_state = float(ckpt["best_val"]), ckpt.get("best_model")
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        self.cpu_elapsed = float(ckpt.get("cpu_elapsed", 0.0))

    def resume(self) -> None:
        """Continue from the run folder's checkpoint."""
        path = self.checkpoint_path
        if path is None:
            raise ZooError("resume needs a run folder")
        self.load_state(load_checkpoint(path), str(path))

    # -- losses --------------------------------------------------------------------------
    def _main_sums(self, pred, batch) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(sum, count, model-owned?) of the stage's main loss, on the standardized view if any."""
        if isinstance(self.model, Standardized):
            pred, batch = self.model.standardized_view(pred, batch)
        owned = self.model.loss_terms(pred, batch)
        if owned is not None:  # sums and counts may be vectors: f then takes the vector of means
            s, c = owned
            s = s.reshape(-1)
            c = torch.as_tensor(c, dtype=s.dtype, device=s.device).reshape(-1).expand_as(s)
            return s, c, True
        s, c = masked_sums(self.spec, pred, batch)
        return s.reshape(1), c.reshape(1), False

    @staticmethod
    def _means(S: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """S / C per component; 0 where a component has no entries (e.g. no edges in a batch)."""
        return torch.where(C > 0, S / C.clamp(min=1e-30), torch.zeros_like(S))

    def _outer(self, m: torch.Tensor, owned: bool) -> torch.Tensor:
        return (self.model.loss_outer(m) if owned else outer(self.spec, m)).sum()

    def _outer_grad(self, m: torch.Tensor, C: torch.Tensor, owned: bool) -> torch.Tensor:
        """df/dm per component: the harness's closed form, or autograd through the model's loss_outer;
        zero for components without entries (their sums are zero too)."""
        if not owned:
            g = outer_grad(self.spec, m)
        else:
            x = m.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(self.model.loss_outer(x).sum(), x)
        return torch.where(C > 0, g.detach(), torch.zeros_like(g))

    # -- steps ---------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> list[list]:
        graphs = self._stage_graphs()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(graphs), generator=g).tolist()
        b = self.stage.cfg.batch_size
        return [[graphs[k] for k in order[s:s + b]] for s in range(0, len(order), b)]

    def _step(self, graphs: list, epoch: int, step: int) -> tuple[float, list[float]]:
        """One optimizer step on a global batch; returns (objective, values of the extra terms)."""
        local = ddp.shard(graphs, self.ctx)
        weight = 1.0
        if not local:  # this rank has no graph in a short last batch: take part with zero weight
            local, weight = [graphs[0]], 0.0
        batch = collate(local).to(self.device)
        self.net.train()
        pred = self.net(batch)
        s, c, owned = self._main_sums(pred, batch)
        self._owned = owned
        K = self._loss_components = s.numel()  # components of the main loss (1 for the harness's)
        sums = [s * weight, c * weight]
        for term, fn in self.terms:
            ts, tc = fn(self.model, pred, batch, self.info, **term.params)
            sums += [ts.to(s.dtype).reshape(1) * weight,
                     torch.as_tensor(tc, dtype=s.dtype, device=s.device).reshape(1) * weight]
        tot = ddp.all_reduce_sum(torch.cat([x.detach() for x in sums]), self.ctx)
        S, C = tot[:K], tot[K:2 * K]
        m = self._means(S, C)
        value = self._outer(m, owned)
        # gradient of f(S/C): sum_k f'_k(m) * dS_k / C_k; DDP averages over W ranks, so scale by W
        surrogate = (self._outer_grad(m, C, owned) * sums[0] / C.clamp(min=1e-30)).sum()
        term_values = []
        for k, (term, _) in enumerate(self.terms):
            Sk, Ck = tot[2 * K + 2 * k], tot[2 * K + 2 * k + 1]
            vk = Sk / Ck if Ck > 0 else Sk * 0.0
            term_values.append(float(vk))
            value = value + term.weight * vk
            surrogate = surrogate + term.weight * sums[2 + 2 * k][0] / Ck.clamp(min=1e-30)
        if not torch.isfinite(value):
            names = [getattr(g, "name", "?") for g in graphs]
            raise TrainingDiverged(f"non-finite training loss ({value.item()}) at epoch {epoch + 1}, step {step + 1} "
                                   f"(stage {self.stage_index + 1} {self.stage.name!r}, batch of {names}); "
                                   f"stopping without a leaderboard row")
        surrogate = surrogate * self.ctx.world_size
        self.opt.zero_grad(set_to_none=True)
        surrogate.backward()
        if self.stage.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.stage.cfg.grad_clip)
        self.opt.step()
        return float(value), term_values

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The stage's main loss (no extra terms) over the validation graphs, sharded and reduced."""
        if not self.val_graphs:
            return float("nan")
        self.model.eval()
        # K components, as in training: a rank without validation graphs still joins with zeros
        K = self._loss_components
        S = torch.zeros(K, dtype=torch.float64, device=self.device)
        C = torch.zeros(K, dtype=torch.float64, device=self.device)
        owned = self._owned
        for g in ddp.shard(self.val_graphs, self.ctx):
            g = g.to(self.device)
            s, c, owned = self._main_sums(self.model(g), g)
            S, C = S + s.double(), C + c.double()
        tot = ddp.all_reduce_sum(torch.cat([S, C]), self.ctx)
        S, C = tot[:K], tot[K:]
        return float(self._outer(self._means(S, C), owned)) if (C > 0).any() else float("nan")

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train until max_epochs, a budget, or the last stage's min-lr stop.

        A fresh run first calls `model.prepare(train_graphs)` (CPU graphs, labelled masks set); a
        resumed run does not: what prepare fitted comes back with the state_dict.
        """
        if resume:
            self.resume()
        else:
            self.model.prepare(self.train_graphs)
        cfg = self.cfg
        budget_s = None if cfg.time_budget_min is None else 60.0 * cfg.time_budget_min
        cpu_s = None if cfg.cpu_budget_min is None else 60.0 * cfg.cpu_budget_min
        reason = "max_epochs"
        # a time/CPU budget with a nominal epoch cap (presets use 100000) is open-ended: no bogus ETA
        open_ended = (budget_s is not None or cpu_s is not None) and cfg.max_epochs >= 10_000
        total = None if open_ended else cfg.max_epochs
        bar = tqdm(total=total, initial=min(self.epoch, cfg.max_epochs), desc="train", unit="epoch",
                   disable=self.quiet or not self.ctx.is_main, dynamic_ncols=True)
        try:
            self._wrap_ddp()
            while True:
                if self.epoch >= cfg.max_epochs:
                    reason = "max_epochs"
                    break
                if ddp.any_flag(budget_s is not None and self.elapsed >= budget_s, self.ctx, self.device):
                    reason = "time_budget"
                    break
                if ddp.any_flag(cpu_s is not None and self.cpu_elapsed >= cpu_s, self.ctx, self.device):
                    reason = "cpu_budget"
                    break
                st = self.stage
                last = st.index == len(self.stages) - 1
                t0, c0 = time.perf_counter(), time.process_time()
                losses, terms = [], []
                for k, b in enumerate(self._epoch_batches(self.epoch)):
                    v, tv = self._step(b, self.epoch, k)
                    losses.append(v)
                    terms.append(tv)
                val = self.validation_loss()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                self.elapsed += dt
                self.cpu_elapsed += dc
                lr = self.opt.param_groups[0]["lr"]
                self.epoch += 1
                self.stage_epoch += 1
                train_loss = float(np.mean(losses))
                monitor = val if math.isfinite(val) else train_loss
                entry = {"epoch": self.epoch, "train_loss": train_loss, "val_loss": val, "lr": lr, "time_s": dt,
                         "cpu_s": dc, "stage": st.index + 1, "stage_name": st.name, "stage_epoch": self.stage_epoch}
                if st.extra:
                    entry["terms"] = {t.term: float(np.mean([tv[k] for tv in terms])) for k, t in enumerate(st.extra)}
                self.history.append(entry)
                if monitor < self.best_val:
                    self.best_val = monitor
                    self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                self.sched.step(self._progress() if st.cfg.schedule == "cosine" else monitor)
                new_lr = self.opt.param_groups[0]["lr"]
                stop_lr = new_lr < st.cfg.min_lr * (1 - 1e-9)
                # time/CPU shares differ between ranks: any rank's "spent" moves every rank on
                if not last and ddp.any_flag(stop_lr or self._stage_spent(st), self.ctx, self.device):
                    self._start_stage(st.index + 1)
                if self.ctx.is_main and self.checkpoint_path is not None:
                    save_checkpoint(self.checkpoint_path, self.state())
                bar.update(1)
                bar.set_postfix(train=f"{train_loss:.3e}", val=f"{val:.3e}", lr=f"{new_lr:.1e}",
                                **({"stage": self.stage.name} if len(self.stages) > 1 else {}))
                if stop_lr and last:
                    reason = "min_lr"
                    break
        finally:
            bar.close()
            self._unwrap_ddp()
        return TrainResult(self.epoch, reason, self.best_val, list(self.history),
                           float(np.mean([h["time_s"] for h in self.history])) if self.history else float("nan"),
                           self.elapsed, self.cpu_elapsed)

    def _wrap_ddp(self) -> None:
        if not self.ctx.distributed or self.net is not self.model:
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # element pairs absent from a rank's shard leave parameters unused in that step
        self.net = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)

    def _unwrap_ddp(self) -> None:
        """Free the DDP reducer now, while the process group is still registered.

        If the reducer outlives destroy_process_group it holds the group's last reference, and
        freeing it runs ~ProcessGroupGloo with the GIL held: that joins gloo's worker threads,
        which may still need the GIL to release a finished collective's tensors -- a deadlock
        seen in CI (rank 0 stuck in std::thread::join under Reducer::~Reducer).
        """
        if self.net is not self.model:
            self.net = self.model
            gc.collect()  # DDP sits in reference cycles; collect them before the group goes

    def use_best(self) -> None:
        """Load the weights with the best validation loss of the last stage (what the test set is scored with)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
