"""Training stages: a preset's `train: stages:` list.

Each stage is a mapping; every key is optional::

    name:   label recorded in the history and the checkpoint (default "stage<k>")
    loss, offdiag_weight, focal_beta, focal_gamma     the stage's harness loss (zoo.bench.losses)
    lr:     the learning rate the stage (re)starts from
    min_lr, lr_decay, patience, threshold             its ReduceLROnPlateau schedule (a new scheduler)
    grad_clip, weight_decay, batch_size               step settings
    epochs: N      end the stage after N epochs, or
    share:  f      end it once a fraction f of the run's budget is spent (0 < f < 1, cumulative over
                   the stages before it; applies to every budget that is set: epochs, wall time, CPU time)
    data:   partitioned | full    train on the preset's partitions (default) or on the full structures
    extra:  [{term: NAME, weight: w, ...params}]      extra loss terms from zoo.bench.terms.EXTRA_TERMS

A stage also ends when its lr falls below its min_lr (the HamGNN recipe's "until convergence");
the last stage takes the rest of the budget, so it may not declare `epochs` or `share`. Keys not
set in a stage come from the `train:` section. The loss of a stage with extra terms is

    L = f(S / C) + sum_k w_k * S_k / C_k

with (S, C) the main loss's (sum, count) and (S_k, C_k) those of term k, each summed over DDP
ranks before dividing, so distributed gradients stay exact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from zoo.errors import ConfigError

#: training keys a stage may override
STAGE_TRAIN_KEYS = ("loss", "offdiag_weight", "focal_beta", "focal_gamma", "lr", "min_lr", "lr_decay", "patience",
                    "threshold", "grad_clip", "weight_decay", "batch_size")
STAGE_KEYS = ("name", "epochs", "share", "data", "extra") + STAGE_TRAIN_KEYS
DATA_MODES = ("partitioned", "full")


@dataclass(frozen=True)
class ExtraTerm:
    """One extra loss term: EXTRA_TERMS[term](model, pred, batch, info, **params) -> (sum, count)."""

    term: str
    weight: float
    params: Mapping[str, Any]


@dataclass
class Stage:
    index: int
    name: str
    cfg: Any  # the stage's effective TrainConfig (the train section with the stage's keys applied)
    epochs: int | None = None
    share: float | None = None
    data: str = "partitioned"
    extra: tuple[ExtraTerm, ...] = ()


def extra_terms_registry() -> Mapping[str, Callable]:
    """`zoo.bench.terms.EXTRA_TERMS` (name -> callable), or an empty mapping if that module is absent."""
    try:
        from zoo.bench import terms
    except ImportError:
        return {}
    return terms.EXTRA_TERMS


def term_function(name: str, where: str) -> Callable:
    reg = extra_terms_registry()
    if name not in reg:
        raise ConfigError(f"{where}: unknown extra term {name!r}; known: {sorted(reg) or 'none (zoo.bench.terms)'}")
    return reg[name]


def _check_params(name: str, params: Mapping[str, Any], where: str) -> None:
    """The terms module's own parameter check, when it offers one (unknown parameters are errors)."""
    try:
        from zoo.bench import terms
    except ImportError:
        return
    check = getattr(terms, "check_term_params", None)
    if check is not None:
        check(name, params, where)


def parse_stages(cfg, where: str = "train") -> list[Stage]:
    """The stages of a TrainConfig; without `stages:` one stage that is the whole `train:` section."""
    if not cfg.stages:
        return [Stage(0, "train", cfg)]
    if not isinstance(cfg.stages, (list, tuple)):
        raise ConfigError(f"{where}: stages must be a list of mappings, got {type(cfg.stages).__name__}")
    out: list[Stage] = []
    last = len(cfg.stages) - 1
    total_share = 0.0
    for k, raw in enumerate(cfg.stages):
        here = f"{where}: stage {k + 1}"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{here}: a stage must be a mapping, got {raw!r}")
        d = dict(raw)
        name = str(d.get("name", f"stage{k + 1}"))
        here = f"{where}: stage {k + 1} ({name!r})"
        unknown = sorted(set(d) - set(STAGE_KEYS))
        if unknown:
            raise ConfigError(f"{here}: unknown key(s) {unknown}; a stage may set {list(STAGE_KEYS)}")
        scfg = dataclasses.replace(cfg, stages=None, **{key: d[key] for key in STAGE_TRAIN_KEYS if key in d})
        scfg.check(here)
        epochs, share = d.get("epochs"), d.get("share")
        if epochs is not None and share is not None:
            raise ConfigError(f"{here}: give epochs or share, not both")
        if k == last and (epochs is not None or share is not None):
            raise ConfigError(f"{here}: the last stage takes the rest of the budget; remove its epochs/share")
        if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
            raise ConfigError(f"{here}: epochs must be a positive integer, got {epochs!r}")
        if share is not None:
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
                raise ConfigError(f"{here}: share must be a number in (0, 1), got {share!r}")
            total_share += float(share)
            if total_share >= 1.0:
                raise ConfigError(f"{here}: the shares add up to {total_share:g} >= 1, leaving nothing for "
                                  f"the last stage")
        data = d.get("data", "partitioned")
        if data not in DATA_MODES:
            raise ConfigError(f"{here}: data must be one of {list(DATA_MODES)}, got {data!r}")
        extra = []
        for t in d.get("extra") or []:
            if not isinstance(t, Mapping) or "term" not in t:
                raise ConfigError(f"{here}: each extra term is a mapping with 'term' (and 'weight'), got {t!r}")
            t = dict(t)
            term, weight = str(t.pop("term")), t.pop("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(f"{here}: extra term {term!r}: weight must be a number >= 0, got {weight!r}")
            term_function(term, here)
            _check_params(term, t, here)
            extra.append(ExtraTerm(term, float(weight), t))
        out.append(Stage(k, name, scfg, epochs, None if share is None else float(share), data, tuple(extra)))
    return out


def cumulative_shares(stages: list[Stage]) -> list[float | None]:
    """Budget fraction at which each stage ends (None: it has no share)."""
    acc, out = 0.0, []
    for s in stages:
        if s.share is None:
            out.append(None)
        else:
            acc += s.share
            out.append(acc)
    return out
