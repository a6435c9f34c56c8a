"""The readers under fuzz, each with a valid seed input. See campaign.py for the rules."""

from __future__ import annotations

from pathlib import Path

import ase.io

from tests.fuzz.campaign import Target, any_file_mutation, hdf5_mutation, json_mutation, text_mutation

STRUCTURE_FORMATS = {"xyz": "s.xyz", "extxyz": "s.extxyz", "cif": "s.cif", "vasp": "POSCAR"}


def _toy_dataset(base: Path) -> Path:
    from tests.conftest import write_toy_dataset

    return write_toy_dataset(base / "ds", n=3)


def _structure_file(fmt: str):
    def seed(base: Path) -> Path:
        from tests.conftest import tiny_hfo2

        path = base / STRUCTURE_FORMATS[fmt]
        ase.io.write(path, tiny_hfo2(0, reps=(1, 1, 1), a=5.3), format=fmt)
        return path
    return seed


def _run_read_record(path: Path, _: Path) -> None:
    from zoo.data.format import read_record

    read_record(path)


def _run_dataset_read(path: Path, adir: Path) -> None:
    """Open, read one structure (validated), and check its physics: a validated record must be usable."""
    from zoo.data.format import Dataset
    from zoo.data.physcheck import check_record

    ds = Dataset.open(adir / "ds")
    rec = ds.read("s0")
    check_record(rec, ds.card.cutoff, path=ds.file_of("s0"))


def _run_dataset_open(path: Path, adir: Path) -> None:
    from zoo.data.format import Dataset

    ds = Dataset.open(adir / "ds")
    ds.card.hash()
    ds.layout()
    for split in ("train", "val", "test"):
        ds.split(split)
    for name in ds.names:
        ds.read(name)


def _run_read_structure(path: Path, _: Path) -> None:
    from zoo.data.structure_io import read_structure

    read_structure(path)


def _run_repair(path: Path, adir: Path) -> None:
    from zoo.data.physcheck import repair_dataset

    repair_dataset(adir / "ds", adir / "out")


def _repair_leftovers(adir: Path, ok: bool) -> list[Path]:
    """After a failed repair only the source may exist; after a good one, the source and the output."""
    allowed = {"ds", "out"} if ok else {"ds"}
    return [p for p in adir.iterdir() if p.name not in allowed]


def all_targets() -> list[Target]:
    """zoo's own readers: structure files, cards, datasets, user structure files, the repairer."""
    targets = [
        Target("read_record", lambda b: _toy_dataset(b) / "structures" / "s0.h5", hdf5_mutation, _run_read_record),
        Target("Dataset.read", lambda b: _toy_dataset(b) / "structures" / "s0.h5", hdf5_mutation, _run_dataset_read),
        Target("Dataset.open", lambda b: _toy_dataset(b) / "dataset.json", json_mutation, _run_dataset_open),
    ]
    for fmt in STRUCTURE_FORMATS:
        targets.append(Target(f"read_structure:{fmt}", _structure_file(fmt), text_mutation, _run_read_structure))
    targets.append(Target("repair_dataset", lambda b: _toy_dataset(b), any_file_mutation, _run_repair,
                          leftovers=_repair_leftovers))
    return targets


def importer_targets() -> list[Target]:
    """Filled in by targets_importers when the importers are present."""
    try:
        from tests.fuzz.targets_importers import importer_targets as found
    except ImportError:
        return []
    return found()


__all__ = ["all_targets", "importer_targets"]
