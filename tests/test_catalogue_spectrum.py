"""Spectrum mode per dataset card: generalized (S(Gamma) positive definite) or H-only, measured."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.conftest import tiny_hfo2
from zoo.data.catalogue.spectrum import GENERALIZED, H_ONLY, SPECTRUM_KEY, card_spectrum, measure_spectrum, memo_path
from zoo.data.format import Dataset, DatasetWriter, Structure
from zoo.data.physcheck import lowest_overlap_eigenvalue
from zoo.data.synthetic import toy_record
from zoo.physics.basis import get_basis

CUTOFF = 4.0


def _write(path: Path, s_offsite_scale: float = 1.0, provenance: dict | None = None) -> Dataset:
    """Three toy HfO2 cells (S positive definite by construction); off-site S scaled by `s_offsite_scale`."""
    basis = get_basis("szv-molopt-sr")
    with DatasetWriter(path, "toy-hfo2", basis, CUTOFF, {"code": "synthetic", "method": "toy two-centre"},
                       provenance=provenance) as w:
        for k in range(3):
            rec = toy_record(Structure.from_ase(tiny_hfo2(k)), basis, CUTOFF, name=f"s{k}", seed=0)
            w.add(dataclasses.replace(rec, s_offsite=rec.s_offsite * s_offsite_scale))
        return w.finalize({"train": ["s0"], "val": ["s1"], "test": ["s2"]})


def test_positive_definite_s_is_generalized(tmp_path):
    ds = _write(tmp_path / "pd")
    spectrum = measure_spectrum(ds)
    assert spectrum["mode"] == GENERALIZED and spectrum["measured_on"] == 3 and spectrum["indefinite_on"] == 0
    lowest = min(lowest_overlap_eigenvalue(ds.read(n), measure=True)[0] for n in ds.names)
    assert spectrum["s_min_eig"] == pytest.approx(lowest, rel=1e-5) and lowest > 0


def test_indefinite_s_is_h_only(tmp_path):
    ds = _write(tmp_path / "indefinite", s_offsite_scale=6.0)  # off-site overlap larger than the on-site norm
    spectrum = measure_spectrum(ds)
    assert spectrum["mode"] == H_ONLY and spectrum["s_min_eig"] < 0 and spectrum["indefinite_on"] == 3


def test_card_field_wins_and_a_measurement_is_remembered_per_card(tmp_path):
    stated = {"mode": H_ONLY, "s_min_eig": -1.0, "measured_on": 3, "indefinite_on": 3}
    assert card_spectrum(_write(tmp_path / "stated", provenance={SPECTRUM_KEY: stated})) == stated
    assert not memo_path(tmp_path / "stated").exists()  # nothing measured

    ds = _write(tmp_path / "old")  # a card from before the field existed
    first = card_spectrum(ds)
    memo = json.loads(memo_path(ds.path).read_text())
    assert first["mode"] == GENERALIZED and memo["card_hash"] == ds.card.hash() and memo[SPECTRUM_KEY] == first
    assert not (ds.path / memo_path(ds.path).name).exists()  # the dataset's own files stay as built
    memo[SPECTRUM_KEY] = {**first, "mode": "remembered"}
    memo_path(ds.path).write_text(json.dumps(memo))
    assert card_spectrum(ds)["mode"] == "remembered"
    memo["card_hash"] = "another-build"  # a rebuilt dataset is measured again
    memo_path(ds.path).write_text(json.dumps(memo))
    assert card_spectrum(ds)["mode"] == GENERALIZED


def test_data_list_shows_the_spectrum_column_without_building(tmp_path, capsys):
    from zoo.cli.main import main

    _write(tmp_path / "md17-h2o" / "small")  # in the cache layout, card without the field
    _write(tmp_path / "a-hfo2" / "small", s_offsite_scale=6.0)
    assert main(["data", "list", "--cache", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("name"))
    assert "spectrum" in header and "S_min_eig" in header
    row = {line.split()[0]: line for line in lines}
    assert " generalized " in row["md17-h2o"] and " H-only " in row["a-hfo2"]
    assert "not built" in row["a-hfo2@paper"] and "not built" in row["c-hfo2"]
    assert not (tmp_path / "c-hfo2").exists()  # listing never builds
