"""Learning-rate schedules: ReduceLROnPlateau (the seed's, with a min-lr stop) or a cosine sized to the budget.

`cosine` anneals lr -> min_lr as  min_lr + (lr - min_lr) (1 + cos(pi f)) / 2, where f in [0, 1] is the
fraction of the run's budget spent after each epoch: the largest of epochs / max_epochs,
wall / time_budget and CPU / cpu_budget (the first to run out ends the run). A plateau schedule
sized for thousands of epochs barely decays in a 30-CPU-minute run of a few dozen epochs; the
cosine reaches min_lr exactly when the budget ends, whatever the epoch count.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("plateau", "cosine")


class BudgetCosine:
    """Cosine annealing over budget progress (not epochs); stateless apart from the optimizer's lr."""

    def __init__(self, opt: torch.optim.Optimizer, lr: float, min_lr: float):
        self.opt, self.lr, self.min_lr = opt, lr, min_lr

    def step(self, progress: float) -> None:
        f = min(max(progress, 0.0), 1.0)
        value = self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * f))
        for group in self.opt.param_groups:
            group["lr"] = value

    def state_dict(self) -> dict:
        return {"lr": self.lr, "min_lr": self.min_lr}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.min_lr = float(state["lr"]), float(state["min_lr"])


def make_scheduler(opt: torch.optim.Optimizer, cfg):
    """The scheduler of one stage's TrainConfig `cfg`."""
    if cfg.schedule == "cosine":
        return BudgetCosine(opt, cfg.lr, cfg.min_lr)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.lr_decay, patience=cfg.patience, threshold=cfg.threshold,
        threshold_mode="rel", min_lr=0.0)
