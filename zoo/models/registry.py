"""Model registry and YAML presets.

    @register_model("mynet")
    class MyNet(Backbone): ...

    model = build_model("mynet", info, preset="cpu", hidden=32)

Hyper-parameters are the keyword arguments of the class's __init__ (after `info`); unknown
keys are errors. Presets live in `presets.yaml` beside the model's module, one mapping per
preset name (`cpu`, `paper`, ...), with the model's hyper-parameters and optional
`train:` and `partition:` sections the harness reads.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable

import yaml

from zoo.errors import ConfigError, ModelError

_REGISTRY: dict[str, type] = {}
#: preset sections read by the harness, not model hyper-parameters
PRESET_SECTIONS = ("train", "partition")
#: packages imported on first registry use, so built-ins register themselves
BUILTIN_MODULES = ["zoo.models.trivial", "zoo.models.sk", "zoo.models.escn"]
_loaded = False


def register_model(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ModelError(f"model name {name!r} is already registered by {_REGISTRY[name].__module__}")
        cls.model_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)


def list_models() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def model_class(name: str) -> type:
    _load_builtins()
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def hparam_names(cls: type) -> dict[str, Any]:
    """The class's hyper-parameters and their defaults."""
    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in list(sig.parameters.items())[2:] if p.kind == p.KEYWORD_ONLY or p.kind == p.POSITIONAL_OR_KEYWORD}


def presets_path(cls: type) -> Path:
    return Path(inspect.getfile(cls)).with_name("presets.yaml")


def load_preset(name: str, preset: str) -> dict:
    """The preset mapping (model hyper-parameters plus optional 'train' section)."""
    cls = model_class(name)
    path = presets_path(cls)
    if not path.is_file():
        raise ConfigError(f"model {name!r} has no presets file ({path})")
    try:
        presets = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if preset not in presets:
        raise ConfigError(f"model {name!r} has no preset {preset!r}; presets: {', '.join(sorted(presets))}")
    out = dict(presets[preset] or {})
    model_keys = {k: v for k, v in out.items() if k not in PRESET_SECTIONS}
    check_hparams(cls, model_keys, where=f"{path}:{preset}")
    return out


def check_hparams(cls: type, hparams: dict, where: str = "") -> None:
    known = hparam_names(cls)
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown hyper-parameter(s) {unknown} for model "
                          f"{getattr(cls, 'model_name', cls.__name__)!r}; known: {sorted(known)}")


def build_model(name: str, info, preset: str | None = None, **hparams):
    """Instantiate a registered backbone: preset values first, then explicit overrides."""
    cls = model_class(name)
    params: dict = {}
    if preset is not None:
        params.update({k: v for k, v in load_preset(name, preset).items() if k not in PRESET_SECTIONS})
    params.update(hparams)
    check_hparams(cls, params)
    return cls(info, **params)
