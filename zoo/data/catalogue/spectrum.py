"""Spectrum mode of a dataset: is the generalized eigenproblem H c = e S c well posed on its blocks?

S assembled at Gamma from the stored blocks (Record.matrix) is positive definite where the blocks
hold the whole overlap (molecules at a 10 A cutoff), and can be indefinite where the cutoff
truncates the long-range overlap of a periodic tblite set (docs/datasets.md, "Truncation"). The
card says which, measured, in `provenance.spectrum`:

    {"mode": "generalized" | "H-only", "s_min_eig": lowest eigenvalue over the structures,
     "measured_on": structures measured, "indefinite_on": structures whose S is not positive definite}

"generalized" when every structure's S(Gamma) has its lowest eigenvalue above
zoo.data.physcheck.S_MIN_EIG (the threshold of `zoo data check`); otherwise "H-only", the seed's
protocol of eig(H) alone that zoo.bench.evaluate.compare_spectra falls back to (it decides per
structure, by whether the Cholesky factorisation of S succeeds). Data without S are "H-only".

New builds measure it (catalogue builder, fixtures). For a card built before the field existed,
`card_spectrum` measures it from the stored structures and remembers the result beside the
dataset directory, keyed by the card's hash: rewriting the card would change that hash, which
leaderboard rows and checkpoints use to name the build.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from zoo.data.format import Dataset, Record, atomic_write
from zoo.data.physcheck import S_MIN_EIG, lowest_overlap_eigenvalue
from zoo.errors import ZooError

SPECTRUM_KEY = "spectrum"  # the card's provenance key
GENERALIZED, H_ONLY = "generalized", "H-only"


def lowest_s_eigenvalue(rec: Record) -> float | None:
    """Lowest eigenvalue of the hermitized S(Gamma) of `rec` (NaN if it could not be computed),
    None when the record stores no S."""
    return lowest_overlap_eigenvalue(rec, measure=True)[0] if rec.has_overlap else None


def spectrum_summary(lowest: Iterable[float | None]) -> dict:
    """The card's `spectrum` entry from each structure's `lowest_s_eigenvalue`."""
    lowest = list(lowest)
    values = [v for v in lowest if v is not None]
    finite = [v for v in values if math.isfinite(v)]
    indefinite = sum(1 for v in values if not v > S_MIN_EIG)  # NaN counts: not shown positive definite
    generalized = bool(lowest) and len(values) == len(lowest) and indefinite == 0
    return {"mode": GENERALIZED if generalized else H_ONLY,
            "s_min_eig": float(f"{min(finite):.6g}") if finite else None,
            "measured_on": len(lowest), "indefinite_on": indefinite}


def measure_spectrum(ds: Dataset) -> dict:
    """Measure the `spectrum` entry of a dataset, one structure at a time."""
    return spectrum_summary(lowest_s_eigenvalue(ds.read(n)) for n in ds.names)


def memo_path(dataset_dir: Path) -> Path:
    """Where a measurement for a card without the field is remembered: beside the directory, like
    the build's lock (.<size>.spectrum.json), so the dataset's own files stay as built."""
    return dataset_dir.parent / f".{dataset_dir.name}.spectrum.json"


def card_spectrum(ds: Dataset) -> dict:
    """The dataset's `spectrum` entry: from its card, else remembered, else measured now (and
    remembered when the cache is writable)."""
    if SPECTRUM_KEY in ds.card.provenance:
        return ds.card.provenance[SPECTRUM_KEY]
    memo, card_hash = memo_path(ds.path), ds.card.hash()
    try:
        kept = json.loads(memo.read_text())
        if kept.get("card_hash") == card_hash:
            return kept[SPECTRUM_KEY]
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # none yet, or unreadable: measure again
    spectrum = measure_spectrum(ds)
    text = json.dumps({"card_hash": card_hash, "dataset": str(ds.path), SPECTRUM_KEY: spectrum}, indent=1)
    def write(tmp: Path) -> None:
        tmp.write_text(text)
        tmp.chmod(0o644)  # readable by whoever shares the cache, like the dataset (mkstemp makes it 0600)

    try:
        atomic_write(memo, write)
    except (OSError, ZooError):
        pass  # a read-only cache: measured again next time
    return spectrum
