"""Which backbones `zoo perf` measures, and how an untrained one is built and saved.

Cost does not depend on the weights, so every measurement uses a freshly initialised model
(seeded) with a preset's hyper-parameters, for the family's elements, basis and cutoff.
"""

from __future__ import annotations

from pathlib import Path
import torch

from zoo.errors import ConfigError

#: registered backbones left out of the default list, and why (they can still be named with --models)
NOT_BY_DEFAULT = {
    "trivial": "contract exerciser for the tests",
    "trivial-soc": "contract exerciser for the tests",
    "mean": "per-element constants, no network to time",
}


def default_models() -> list[str]:
    """Every registered spinless backbone (the family, a-HfO2, has no spin) except NOT_BY_DEFAULT."""
    from zoo.models.registry import list_models, model_class

    return [m for m in list_models() if m not in NOT_BY_DEFAULT and not model_class(m).spinful]


def parse_models(text: str | None) -> list[str]:
    """'escn,sk' -> ['escn', 'sk'] (registered names, order kept); None or '' -> default_models()."""
    from zoo.models.registry import model_class

    if not text:
        return default_models()
    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise ConfigError(f"--models names no backbone: {text!r}")
    for name in names:
        model_class(name)  # ModelError listing the registered names
    return names


def preset_hparams(name: str, preset: str) -> dict:
    """The model hyper-parameters of `preset` (its train / partition sections left out)."""
    from zoo.models.registry import PRESET_SECTIONS, load_preset

    return {k: v for k, v in load_preset(name, preset).items() if k not in PRESET_SECTIONS}


def untrained(name: str, info, hparams: dict, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A freshly initialised backbone (seeded, so every process builds the same weights)."""
    from zoo.models.registry import build_model

    torch.manual_seed(seed)
    return build_model(name, info, **hparams).to(dtype)


def write_checkpoint(path: str | Path, name: str, info, hparams: dict, seed: int = 0) -> None:
    """An untrained model saved as `zoo bench` saves one (meta, weights, float32), for `zoo predict`'s path."""
    from zoo.bench.run import dataset_info_json
    from zoo.bench.trainer import save_checkpoint

    model = untrained(name, info, hparams, seed)
    save_checkpoint(Path(path), {"meta": {"model": name, "hparams": hparams, "info": dataset_info_json(info)},
                                 "model": model.state_dict(), "train_config": {"dtype": "float32"}})


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

