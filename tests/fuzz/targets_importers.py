"""Fuzz targets for the importers (zoo.data.importers.import_dataset), generically: each format's
seed is a source that imports successfully (written by the importer tests' own writers, read
here, never edited); one file of it is damaged per attempt. An import must end in a ZooError
naming the source, or succeed, and must never leave `out` or `.out.partial` behind on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tests.fuzz.campaign import Target, any_file_mutation


def _seeds() -> dict[str, tuple[Callable[[Path], Path], dict[str, Any]]]:
    """format -> (write a valid source under base and return its path, import options)."""
    import numpy as np

    import tests.test_importers as T
    from zoo.data.format import Structure
    from zoo.data.synthetic import toy_record
    from zoo.physics.basis import get_basis

    def rec():
        return toy_record(T.box_structure(), T.HFO, 4.0, name="a")

    def in_dir(write):
        def seed(base: Path) -> Path:
            write(base / "src", rec())
            return base / "src"
        return seed

    def hamgnn(base: Path) -> Path:
        (base / "src").mkdir()
        T.write_hamgnn(base / "src" / "graph_data.npz", [rec()])
        return base / "src"

    def schnorb(base: Path) -> Path:
        st = Structure([8, 1, 1], [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]], np.zeros((3, 3)), False)
        recs = [toy_record(Structure(st.numbers, st.positions * (1 + 0.02 * k), st.cell, st.pbc),
                           get_basis("def2-svp"), 10.0, name=f"m{k}") for k in range(3)]
        T.write_schnorb(base / "src.db", recs)
        return base / "src.db"

    return {
        "cp2k": (in_dir(T.write_cp2k), {"basis": T.HFO}),
        "deeph": (in_dir(T.write_deeph), {}),
        "deeptb": (in_dir(lambda d, r: T.write_deeptb(d, r, {"Hf": "2s1p1d", "O": "1s1p"})), {}),
        "gears": (in_dir(T.write_gears), {}),
        "hamgnn": (hamgnn, {"basis": {"Hf": [0, 0, 1, 2], "O": [0, 1]}}),
        "schnorb": (schnorb, {}),
    }


def _run(fmt: str, opts: dict):
    def run(src: Path, adir: Path) -> None:
        from zoo.data.importers import import_dataset

        import_dataset(fmt, src, adir / "out", name="fuzz", **opts)
    return run


def _checked(fmt: str, write: Callable[[Path], Path], opts: dict) -> Callable[[Path], Path]:
    """The seed must import cleanly, or every attempt would count as a (meaningless) rejection."""
    def seed(base: Path) -> Path:
        import shutil

        from zoo.data.importers import import_dataset

        src = write(base)
        import_dataset(fmt, src, base.parent / f"{base.name}-check", name="seed", **opts)
        shutil.rmtree(base.parent / f"{base.name}-check")
        return src
    return seed


def _leftovers(src_name: str):
    def left(adir: Path, ok: bool) -> list[Path]:
        allowed = {src_name, "out"} if ok else {src_name}
        return [p for p in adir.iterdir() if p.name not in allowed]
    return left


def importer_targets() -> list[Target]:
    try:
        from zoo.data.importers import list_formats

        seeds = _seeds()
    except (ImportError, AttributeError):  # importers or their test writers not there yet
        return []
    targets = []
    for fmt in list_formats():
        if fmt not in seeds:
            continue
        write, opts = seeds[fmt]
        src_name = "src.db" if fmt == "schnorb" else "src"
        targets.append(Target(f"import:{fmt}", _checked(fmt, write, opts), any_file_mutation, _run(fmt, opts), leftovers=_leftovers(src_name)))
    return targets
