"""Where catalogue datasets live: $ZOO_CACHE (or ~/.cache/zoo/datasets)/<name>/<size>[-unfolded]/,
and the name their card carries ("a-hfo2", "a-hfo2@paper", "a-hfo2+unfolded")."""

from __future__ import annotations

import os
from pathlib import Path

from zoo.data.catalogue.entries import parse_name
from zoo.data.format import CARD_NAME


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """--cache, else $ZOO_CACHE, else ~/.cache/zoo/datasets."""
    if cache:
        return Path(cache).expanduser()
    env = os.environ.get("ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zoo" / "datasets"


def dataset_path(name: str, size: str | None = None, cache: str | os.PathLike | None = None,
                 unfolded: bool = False) -> Path:
    """Directory of a catalogue dataset (built or not); 'a-hfo2+unfolded@paper' is understood."""
    if "+unfolded" in name:
        name, unfolded = name.replace("+unfolded", ""), True
    entry, size = parse_name(name, size)
    return cache_dir(cache) / entry.name / (f"{size}-unfolded" if unfolded else size)


def card_name(entry_name: str, size: str, unfolded: bool = False) -> str:
    """The dataset's name in its card: the entry's, "+unfolded" for per-image builds, "@size" unless small."""
    return entry_name + ("+unfolded" if unfolded else "") + ("" if size == "small" else f"@{size}")


def is_built(name: str, size: str | None = None, cache: str | os.PathLike | None = None) -> bool:
    return (dataset_path(name, size, cache) / CARD_NAME).is_file()
