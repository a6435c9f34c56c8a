"""The rows of `zoo data list`: every catalogue dataset and size, and what is built of it."""

from __future__ import annotations

import os

from zoo.data.catalogue.entries import CATALOGUE
from zoo.data.catalogue.paths import card_name, dataset_path
from zoo.data.catalogue.spectrum import card_spectrum
from zoo.data.format import CARD_NAME, Dataset
from zoo.errors import ZooError


def catalogue_table(cache: str | os.PathLike | None = None) -> list[dict]:
    """One row per (dataset, size): engine, cutoff, cells, built?, disk size and spectrum mode
    (generalized / H-only, with the lowest eigenvalue of S(Gamma); "not built"). Reads cards and,
    for a card without the spectrum field, the stored S blocks once (zoo.data.catalogue.spectrum);
    never builds."""
    rows = []
    for entry in CATALOGUE.values():
        # the default build, its unfolded variant, and builds with the entry's other engine recipes
        variants = [(None, False), (None, True), *((engine, False) for engine in entry.engines)]
        for size, spec in entry.sizes.items():
            for engine, unfolded in variants:
                path = dataset_path(entry.name, size, cache, unfolded=unfolded, engine=engine)
                built = (path / CARD_NAME).is_file()
                if (unfolded or engine) and not built:
                    continue  # variants are listed once built
                engine_name, _, cutoffs = entry.engine_recipe(engine)
                row = {"name": card_name(entry.name, size, unfolded, engine), "size": size, "engine": engine_name,
                       "cutoff_A": cutoffs[size], "cells": spec.note or "", "built": "yes" if built else "no",
                       "disk": "", "spectrum": "not built", "S_min_eig": ""}
                if built:
                    nbytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                    row["disk"] = f"{nbytes / 2**20:.1f} MiB"
                    try:
                        ds = Dataset.open(path, validate=False)
                        row["cells"] = f"{len(ds)} structures, {sum(s['n_atoms'] for s in ds.card.structures.values())} atoms"
                        spectrum = card_spectrum(ds)
                        row["spectrum"] = spectrum["mode"]
                        if spectrum.get("s_min_eig") is not None:
                            row["S_min_eig"] = f"{spectrum['s_min_eig']:.3g}"
                    except ZooError:
                        row["built"], row["spectrum"] = "broken", ""
                rows.append(row)
    return rows
