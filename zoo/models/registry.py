"""Model registry and YAML presets.

    @register_model("mynet")
    class MyNet(Backbone): ...

    model = build_model("mynet", info, preset="cpu", hidden=32)

Hyper-parameters are the keyword arguments of the class's __init__ (after `info`); unknown
keys are errors. Presets live in `presets.yaml` beside the model's module, one mapping per
preset name (`cpu`, `paper`, ...), with the model's hyper-parameters and optional
`train:` and `partition:` sections the harness reads.

Backbones are found in two places, both imported on first registry use: the built-in
packages (`BUILTIN_MODULES`) and the entry-point group `zoo.backbones` of every installed
distribution, so a user's own package adds a backbone without editing zoo:

    [project.entry-points."zoo.backbones"]
    mynet = "mypkg.mynet"            # a module that registers itself with @register_model
    # or "mypkg.mynet:MyNet" (a class: registered under the entry point's name if it is not yet)

A plugin that fails to load does not break the registry: the other backbones stay usable and
the failure (naming the plugin and its distribution) is kept in `plugin_errors()`, reported by
`zoo models` and by the "unknown model" error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from pathlib import Path
from typing import Any, Callable

import yaml

from zoo.errors import ConfigError, ModelError

_REGISTRY: dict[str, type] = {}
#: preset sections read by the harness, not model hyper-parameters
PRESET_SECTIONS = ("train", "partition")
#: packages imported on first registry use, so built-ins register themselves
BUILTIN_MODULES = ["zoo.models.trivial", "zoo.models.sk", "zoo.models.escn", "zoo.models.mean", "zoo.models.acdc",
                   "zoo.models.lcnet", "zoo.models.hamgnn"]
#: entry-point group through which installed distributions add backbones
ENTRY_POINT_GROUP = "zoo.backbones"
_loaded = False
#: entry-point name -> why that plugin could not be loaded
_PLUGIN_ERRORS: dict[str, str] = {}


def register_model(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ModelError(f"model name {name!r} is already registered by {_REGISTRY[name].__module__}")
        cls.model_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    """Import the built-in backbones (an error there is zoo's own bug: it propagates), then the plugins."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load_plugin(ep)


def _load_plugin(ep: importlib.metadata.EntryPoint) -> None:
    """Import one `zoo.backbones` entry point; a failure is recorded under its name, never raised."""
    dist = getattr(ep, "dist", None)
    origin = f"entry point {ep.name!r} = {ep.value!r}" + (f" of distribution {dist.name!r}" if dist is not None else "")
    try:
        obj = ep.load()
        if inspect.isclass(obj):
            from zoo.models.contract import Backbone

            if not issubclass(obj, Backbone):
                raise ModelError(f"{obj.__module__}.{obj.__qualname__} is not a zoo Backbone subclass")
            if obj not in _REGISTRY.values():
                register_model(ep.name)(obj)
    except Exception as exc:  # a broken plugin must not take the registry (and every command) down with it
        _PLUGIN_ERRORS[ep.name] = f"backbone plugin {origin} failed to load: {type(exc).__name__}: {exc}"


def plugin_errors() -> dict[str, str]:
    """Entry-point name -> message, for each `zoo.backbones` plugin that failed to load."""
    _load_builtins()
    return dict(_PLUGIN_ERRORS)


def list_models() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def model_class(name: str) -> type:
    _load_builtins()
    if name not in _REGISTRY:
        msg = f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        if _PLUGIN_ERRORS:
            msg += "; plugins that failed to load: " + "; ".join(_PLUGIN_ERRORS[k] for k in sorted(_PLUGIN_ERRORS))
        raise ModelError(msg)
    return _REGISTRY[name]


def hparam_names(cls: type) -> dict[str, Any]:
    """The class's hyper-parameters and their defaults."""
    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in list(sig.parameters.items())[2:] if p.kind == p.KEYWORD_ONLY or p.kind == p.POSITIONAL_OR_KEYWORD}


def presets_path(cls: type) -> Path:
    return Path(inspect.getfile(cls)).with_name("presets.yaml")


def readme_path(cls: type) -> Path:
    """README.md beside the backbone's module (names its paper, what is faithful, what differs)."""
    return Path(inspect.getfile(cls)).with_name("README.md")


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


def preset_message_passing_layers(name: str, preset: str = "cpu") -> int:
    """Message-passing layers of the backbone built from `preset`.

    Read from the instance, not the class: the depth may follow a hyper-parameter (escn's
    `num_layers`, sk's `crystal_field`). Built on a small stand-in dataset (O and Hf in
    szv-molopt-sr: s, p and d shells; 4 A cutoff; spinful if the backbone is).
    """
    from zoo.data.torch_data import DatasetInfo
    from zoo.physics.basis import OrbitalLayout, get_basis

    cls = model_class(name)
    info = DatasetInfo(OrbitalLayout(get_basis("szv-molopt-sr"), [8, 72]), 4.0, spinful=bool(cls.spinful),
                       name="stand-in")
    return int(build_model(name, info, preset=preset).message_passing_layers)
