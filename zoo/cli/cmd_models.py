"""`zoo models`: what the registry holds."""

from __future__ import annotations

from tabulate import tabulate


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list registered backbones")
    p.set_defaults(func=run)


def run(args) -> int:
    from zoo.models.registry import hparam_names, list_models, model_class, presets_path

    rows = []
    for name in list_models():
        cls = model_class(name)
        doc = (cls.__doc__ or cls.__module__).strip().splitlines()[0]
        presets = "yes" if presets_path(cls).is_file() else "no"
        rows.append([name, cls.message_passing_layers, ", ".join(hparam_names(cls)), presets, doc[:60]])
    print(tabulate(rows, headers=["model", "MP layers", "hyper-parameters", "presets", "description"]))
    return 0
