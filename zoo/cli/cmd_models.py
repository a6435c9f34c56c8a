"""`zoo models`: what the registry holds (built-ins and `zoo.backbones` plugins)."""

from __future__ import annotations

import sys

from tabulate import tabulate


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list registered backbones (built-in and installed plugins)")
    p.add_argument("--preset", default="cpu", help="preset whose message-passing depth is shown (default: cpu)")
    p.set_defaults(func=run)


def run(args) -> int:
    from zoo.errors import ZooError
    from zoo.models.registry import (hparam_names, list_models, model_class, plugin_errors, preset_message_passing_layers,
                                     presets_path)

    rows = []
    for name in list_models():
        cls = model_class(name)
        doc = (cls.__doc__ or cls.__module__).strip().splitlines()[0]
        presets = "yes" if presets_path(cls).is_file() else "no"
        try:
            layers: int | str = preset_message_passing_layers(name, args.preset)
        except Exception as exc:  # no such preset, or one the model rejects (a plugin's own error): keep listing
            layers = "?"
            what = str(exc) if isinstance(exc, ZooError) else f"{type(exc).__name__}: {exc}"
            print(f"zoo models: {name}: cannot build its {args.preset!r} preset: {what}", file=sys.stderr)
        flags = ",".join(f for f, on in (("spinful", cls.spinful), ("hermitian", cls.hermitian)) if on) or "-"
        hp = ", ".join(hparam_names(cls))
        hp = hp if len(hp) <= 60 else hp[:57] + "..."  # long lists are cut; an unknown --set key lists them all
        rows.append([name, cls.__module__, layers, flags, hp, presets, doc[:60]])
    print(tabulate(rows, headers=["model", "module", f"MP layers ({args.preset})", "declares", "hyper-parameters",
                                  "presets", "description"]))
    for msg in plugin_errors().values():
        print(f"zoo models: {msg}", file=sys.stderr)
    return 0
