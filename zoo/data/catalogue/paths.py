"""Where catalogue datasets live: $ZOO_CACHE (or ~/.cache/zoo/datasets)/<name>/<size>[-<engine>][-unfolded]/,
and the name their card carries ("a-hfo2", "a-hfo2@paper", "a-hfo2+unfolded", "a-hfo2+cp2k").

A build with an engine other than the entry's own (`--engine cp2k`) is its own dataset beside
the default one, so the two never share a directory or a name."""

from __future__ import annotations

import os
from pathlib import Path

from zoo.data.catalogue.entries import parse_name, split_variant
from zoo.data.format import CARD_NAME


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """--cache, else $ZOO_CACHE, else ~/.cache/zoo/datasets."""
    if cache:
        return Path(cache).expanduser()
    env = os.environ.get("ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zoo" / "datasets"


def dataset_path(name: str, size: str | None = None, cache: str | os.PathLike | None = None,
                 unfolded: bool = False, engine: str | None = None) -> Path:
    """Directory of a catalogue dataset (built or not); variants such as 'a-hfo2+cp2k@paper' or
    'a-hfo2+unfolded' are understood."""
    base, named_engine, named_unfolded = split_variant(name)
    entry, size = parse_name(base, size)
    engine = engine_tag(entry.engine, engine or named_engine)
    suffix = (f"-{engine}" if engine else "") + ("-unfolded" if unfolded or named_unfolded else "")
    return cache_dir(cache) / entry.name / (size + suffix)


def engine_tag(entry_engine: str, engine: str | None) -> str | None:
    """The engine named in a variant's path and card name: None for the entry's own engine."""
    engine = engine.lower() if engine else None
    return engine if engine and engine != entry_engine else None


def card_name(entry_name: str, size: str, unfolded: bool = False, engine: str | None = None) -> str:
    """The dataset's name in its card: the entry's, "+<engine>" for a build with another engine
    (`engine_tag`), "+unfolded" for supercell-unfolded builds, "@size" unless small."""
    return (entry_name + (f"+{engine}" if engine else "") + ("+unfolded" if unfolded else "")
            + ("" if size == "small" else f"@{size}"))


def is_built(name: str, size: str | None = None, cache: str | os.PathLike | None = None) -> bool:
    return (dataset_path(name, size, cache) / CARD_NAME).is_file()
