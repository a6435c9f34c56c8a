"""The trainer: masked loss, Adam, ReduceLROnPlateau with a minimum-lr stop, budgets,
gradient clipping, atomic per-epoch checkpoints, exact resume and DDP.

Determinism: the model is built after seeding; the order of training graphs in epoch e is a
permutation drawn from a generator seeded with (seed, e) alone, so a resumed run replays the
same batches as an uninterrupted one, and optimizer/scheduler/RNG states travel in the
checkpoint.
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
from zoo.data.format import atomic_write
from zoo.data.torch_data import collate
from zoo.errors import ConfigError, ZooError

CHECKPOINT_NAME = "checkpoint.pt"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

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


class Trainer:
    """Fits a backbone on lists of torch-geometric graphs (full structures or partitions)."""

    def __init__(self, model: torch.nn.Module, train: Sequence, val: Sequence, cfg: TrainConfig, seed: int = 0,
                 run_dir: str | Path | None = None, card_hash: str = "", meta: Mapping | None = None,
                 ctx: ddp.DistContext | None = None, device: torch.device | None = None, quiet: bool = False):
        if not train:
            raise ZooError("no training graphs")
        self.cfg, self.seed, self.quiet = cfg, int(seed), quiet
        self.ctx = ctx or ddp.DistContext()
        self.device = device or resolve_device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.train_graphs, self.val_graphs = list(train), list(val)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.card_hash, self.meta = card_hash, dict(meta or {})
        self.spec = cfg.loss_spec()
        self.net = self.model  # the DDP wrapper while fit() runs distributed, else the model itself
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="min", factor=cfg.lr_decay, patience=cfg.patience, threshold=cfg.threshold,
            threshold_mode="rel", min_lr=0.0)
        self.epoch = 0
        self.history: list[dict] = []
        self.best_val = float("inf")
        self.best_state: dict | None = None
        self.elapsed = 0.0

    # -- checkpoints -------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / CHECKPOINT_NAME

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng": _rng_state(), "epoch": self.epoch,
                "card_hash": self.card_hash, "history": self.history, "best_val": self.best_val,
                "best_model": self.best_state, "elapsed": self.elapsed, "seed": self.seed,
                "train_config": self.cfg.to_dict(), "meta": self.meta}

    def load_state(self, ckpt: Mapping, where: str = "checkpoint") -> None:
        if ckpt.get("card_hash") != self.card_hash:
            raise ZooError(f"{where}: checkpoint was trained on dataset card {ckpt.get('card_hash')!r} but this "
                           f"dataset's card hash is {self.card_hash!r}; refusing to resume on a different dataset")
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        self.epoch, self.history = int(ckpt["epoch"]), list(ckpt["history"])
        self.best_val, self.best_state = float(ckpt["best_val"]), ckpt.get("best_model")
        self.elapsed = float(ckpt.get("elapsed", 0.0))

    def resume(self) -> None:
        """Continue from the run folder's checkpoint."""
        path = self.checkpoint_path
        if path is None:
            raise ZooError("resume needs a run folder")
        self.load_state(load_checkpoint(path), str(path))

    # -- steps ---------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> list[list]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_graphs), generator=g).tolist()
        b = self.cfg.batch_size
        return [[self.train_graphs[k] for k in order[s:s + b]] for s in range(0, len(order), b)]

    def _step(self, graphs: list, epoch: int, step: int) -> float:
        local = ddp.shard(graphs, self.ctx)
        weight = 1.0
        if not local:  # this rank has no graph in a short last batch: take part with zero weight
            local, weight = [graphs[0]], 0.0
        batch = collate(local).to(self.device)
        self.net.train()
        pred = self.net(batch)
        s, c = masked_sums(self.spec, pred, batch)
        s, c = s * weight, c * weight
        tot = ddp.all_reduce_sum(torch.stack([s.detach(), c.detach()]), self.ctx)
        S, C = tot[0], tot[1]
        value = outer(self.spec, S / C) if C > 0 else S * 0.0
        if not torch.isfinite(value):
            names = [getattr(g, "name", "?") for g in graphs]
            raise TrainingDiverged(f"non-finite training loss ({value.item()}) at epoch {epoch + 1}, step {step + 1} "
                                   f"(batch of {names}); stopping without a leaderboard row")
        # gradient of f(S/C): f'(m) * dS / C; DDP averages over W ranks, so scale by W
        surrogate = outer_grad(self.spec, S / C.clamp(min=1e-30)) * s / C.clamp(min=1e-30) * self.ctx.world_size
        self.opt.zero_grad(set_to_none=True)
        surrogate.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return float(value)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Loss over the validation graphs, sharded over ranks and reduced."""
        if not self.val_graphs:
            return float("nan")
        self.model.eval()
        S = torch.zeros((), dtype=torch.float64, device=self.device)
        C = torch.zeros((), dtype=torch.float64, device=self.device)
        for g in ddp.shard(self.val_graphs, self.ctx):
            s, c = masked_sums(self.spec, self.model(g.to(self.device)), g.to(self.device))
            S, C = S + s.double(), C + c.double()
        tot = ddp.all_reduce_sum(torch.stack([S, C]), self.ctx)
        return float(outer(self.spec, tot[0] / tot[1])) if tot[1] > 0 else float("nan")

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        if resume:
            self.resume()
        cfg = self.cfg
        budget_s = None if cfg.time_budget_min is None else 60.0 * cfg.time_budget_min
        reason = "max_epochs"
        # a time budget with a nominal epoch cap (presets use 100000) is open-ended: no bogus ETA
        total = None if cfg.time_budget_min is not None and cfg.max_epochs >= 10_000 else cfg.max_epochs
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
                t0 = time.perf_counter()
                losses = [self._step(b, self.epoch, k) for k, b in enumerate(self._epoch_batches(self.epoch))]
                val = self.validation_loss()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                lr = self.opt.param_groups[0]["lr"]
                self.epoch += 1
                train_loss = float(np.mean(losses))
                monitor = val if math.isfinite(val) else train_loss
                self.history.append({"epoch": self.epoch, "train_loss": train_loss, "val_loss": val, "lr": lr,
                                     "time_s": dt})
                if monitor < self.best_val:
                    self.best_val = monitor
                    self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                self.sched.step(monitor)
                new_lr = self.opt.param_groups[0]["lr"]
                stop_lr = new_lr < cfg.min_lr * (1 - 1e-9)
                if self.ctx.is_main and self.checkpoint_path is not None:
                    save_checkpoint(self.checkpoint_path, self.state())
                bar.update(1)
                bar.set_postfix(train=f"{train_loss:.3e}", val=f"{val:.3e}", lr=f"{new_lr:.1e}")
                if stop_lr:
                    reason = "min_lr"
                    break
        finally:
            bar.close()
            self._unwrap_ddp()
        return TrainResult(self.epoch, reason, self.best_val, list(self.history),
                           float(np.mean([h["time_s"] for h in self.history])) if self.history else float("nan"),
                           self.elapsed)

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
        """Load the weights with the best validation loss (what the test set is scored with)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
