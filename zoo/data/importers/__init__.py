"""Importers for the files other codes write, and the registry behind `zoo data import`.

    import_dataset("deeptb", "si64-deeptb/", "datasets/si64", name="si64")

Each format module exposes `FORMAT` and `read(src, **options) -> (ImportSource, BasisSet,
records)`; `import_dataset` writes the records through `DatasetWriter` (atomically) with the
source recorded in the card. Options common to every format: basis, cutoff, splits (three
fractions or {split: names}), seed, overwrite, description. See docs/importers.md.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from zoo.data.format import Dataset
from zoo.data.importers.common import write_dataset
from zoo.errors import ConfigError

#: format name -> module implementing it
FORMATS: dict[str, str] = {
    "cp2k": "zoo.data.importers.cp2k",
    "deeph": "zoo.data.importers.deeph",
    "deeptb": "zoo.data.importers.deeptb",
    "schnorb": "zoo.data.importers.schnorb",
    "hamgnn": "zoo.data.importers.hamgnn",
    "gears": "zoo.data.importers.gears",
}
_ALIASES = {"xia": "cp2k", "deeph-e3": "deeph", "md17": "schnorb", "gears_h": "gears", "gears-h": "gears"}
_COMMON = ("cutoff", "splits", "seed", "overwrite", "description")


def list_formats() -> list[str]:
    return sorted(FORMATS)


def _module(fmt: str):
    key = _ALIASES.get(fmt.lower(), fmt.lower())
    if key not in FORMATS:
        raise ConfigError(f"unknown import format {fmt!r}; known: {', '.join(list_formats())}")
    return importlib.import_module(FORMATS[key])


def import_dataset(format: str, src: str | Path, dest: str | Path, name: str, **opts: Any) -> Dataset:
    """Convert the files at `src` (written by another code) into a zoo dataset at `dest`."""
    mod = _module(format)
    common = {k: opts.pop(k) for k in _COMMON if k in opts}
    allowed = set(inspect.signature(mod.read).parameters) - {"src", "_"}
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ConfigError(f"format {mod.FORMAT!r} has no option(s) {unknown}; it takes {sorted(allowed)}")
    if "cutoff" in allowed and "cutoff" in common:  # formats that drop blocks by distance while reading
        opts["cutoff"] = common["cutoff"]
    source, basis, records = mod.read(src, **opts)
    return write_dataset(dest, name, source, basis, records, **common)
