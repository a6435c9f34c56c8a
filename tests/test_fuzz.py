"""Fuzzing the readers: every damaged input ends in a ZooError naming the file (or reads fine),
never a bare h5py/numpy/ase exception, a hang, or a partial dataset directory.

Default run: a seeded campaign of 430 inputs (~10 s). The long campaign (5000 per reader) is
`pytest -m slow tests/test_fuzz.py` or `python -m tests.fuzz.campaign --n 5000` (docs/reliability.md).
"""

from __future__ import annotations

import json

import ase.io
import h5py
import numpy as np
import pytest

from tests.conftest import tiny_hfo2
from tests.fuzz import mutators as M
from tests.fuzz.campaign import run_campaign
from tests.fuzz.targets import all_targets, importer_targets
from zoo.data.format import Dataset, read_record
from zoo.data.structure_io import read_structure
from zoo.errors import DataError

DEFAULT_COUNTS = {"read_record": 80, "Dataset.read": 80, "Dataset.open": 80, "read_structure:xyz": 40,
                  "read_structure:extxyz": 40, "read_structure:cif": 40, "read_structure:vasp": 40,
                  "repair_dataset": 30}


def test_default_campaign_has_no_escapes(tmp_path):
    targets = all_targets()
    assert {t.name for t in targets} == set(DEFAULT_COUNTS)
    result = run_campaign(targets, DEFAULT_COUNTS, seed=0, workdir=tmp_path)
    print(result.table())
    assert dict(result.tried) == DEFAULT_COUNTS
    assert not result.escapes, "\n".join(map(str, result.escapes))
    # the mutations bite: most damaged inputs are rejected, with a ZooError naming the file
    for name in DEFAULT_COUNTS:
        assert result.rejected[name] >= DEFAULT_COUNTS[name] // 4, (name, result.table())
    assert not any(tmp_path.iterdir())  # every attempt cleaned up after itself


@pytest.mark.slow
def test_long_campaign(tmp_path):
    import resource

    old = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (8 * 2**30, old[1]))  # a runaway reader gets MemoryError, not the OOM killer
    try:
        targets = all_targets() + importer_targets()
        result = run_campaign(targets, 5000, seed=12345, workdir=tmp_path, progress=True)
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, old)
    print(result.table())
    assert not result.escapes, "\n".join(map(str, result.escapes[:50]))


def test_mutators_are_seeded():
    data = bytes(range(256)) * 4
    a = [M.mutate_bytes(np.random.default_rng([3, k]), data) for k in range(20)]
    b = [M.mutate_bytes(np.random.default_rng([3, k]), data) for k in range(20)]
    assert a == b and len({x for x, _ in a}) > 10
    card = {"a": [1, 2, {"b": "c"}], "d": 1.5}
    assert M.mutate_json(np.random.default_rng(1), card) == M.mutate_json(np.random.default_rng(1), card)


# -- regressions: the escapes the campaign found, pinned as plain tests --------------------------

def _rewrite(path, key, value):
    with h5py.File(path, "a") as f:
        del f[key]
        f[key] = value


@pytest.mark.parametrize("key, value, fault", [
    ("H/onsite", np.array([b"abc"] * 5), "holds |S3 values, not numbers"),
    ("numbers", np.array([b"Hf"] * 24), "not numbers"),
    ("cell", np.eye(3) * 2.0**62, "cell exceed"),
    ("cell", np.diag([5.1, 0.01, 5.1]), "overlaps its own periodic image"),
    ("positions", np.full((24, 3), 1e300), "positions exceed"),
])
def test_structure_file_faults(toy_dataset, key, value, fault):
    f = toy_dataset / "structures" / "s0.h5"
    _rewrite(f, key, value)
    with pytest.raises(DataError, match=fault) as info:
        Dataset.open(toy_dataset).read("s0")
    assert "s0.h5" in str(info.value)


def test_corrupt_hdf5_btree_is_a_dataerror(toy_dataset):
    """h5py raises RuntimeError for some corrupt B-trees; seed 0 attempt 3 of the campaign."""
    f = toy_dataset / "structures" / "s0.h5"
    data = f.read_bytes()
    for k in range(64):  # damage the object headers until h5py notices, whichever error it picks
        bad, _ = M.mutate_bytes(np.random.default_rng([k]), data)
        f.write_bytes(bad)
        try:
            read_record(f)
        except DataError as exc:
            assert "s0.h5" in str(exc)


@pytest.mark.parametrize("edit, fault", [
    (lambda c: c["splits"]["test"].__setitem__(0, {"a": 1}), "must be a list of structure names"),
    (lambda c: c["structures"]["s0"].pop("file"), "needs a 'file' path"),
    (lambda c: c["structures"]["s0"].__setitem__("file", 3), "needs a 'file' path"),
    (lambda c: c["structures"]["s0"].__setitem__("file", "../../etc/passwd"), "needs a 'file' path"),
    (lambda c: c.__setitem__("units", ["hartree"]), "units must be a mapping"),
    (lambda c: c.__setitem__("elements", [8, float("inf")]), "malformed dataset card"),
    (lambda c: c.__setitem__("elements", []), "lists no elements"),
])
def test_card_faults(toy_dataset, edit, fault):
    card_path = toy_dataset / "dataset.json"
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(DataError, match=fault) as info:
        Dataset.open(toy_dataset)
    assert "dataset.json" in str(info.value)


# -- read_structure ------------------------------------------------------------------------------

def test_read_structure_formats(tmp_path):
    atoms = tiny_hfo2(0, reps=(1, 1, 1))
    atoms.wrap()  # cif stores fractional coordinates in [0, 1)
    for name, fmt in (("a.extxyz", "extxyz"), ("a.cif", "cif"), ("POSCAR", "vasp"), ("a.xyz", "xyz")):
        ase.io.write(tmp_path / name, atoms, format=fmt)
        st = read_structure(tmp_path / name)
        assert st.n_atoms == 12 and list(st.numbers[:4]) == [72] * 4
        np.testing.assert_allclose(st.positions, atoms.positions, atol=1e-5)
        if fmt != "xyz":
            np.testing.assert_allclose(st.cell, atoms.cell[:], atol=1e-5)
            assert st.pbc.all()


@pytest.mark.parametrize("name, text, fault", [
    ("empty.xyz", "", "structure file is empty"),
    ("garbage.xyz", "\x00\x01 not a structure\n", "cannot read structure"),
    ("short.xyz", "3\n\nH 0 0 0\n", "declares 3 atoms but only 1 lines follow"),
    ("bad.extxyz", "2\nbad \"comment\n H 0 0 0\nH 0 0 x\n", "cannot read structure"),
    ("nan.xyz", "2\n\nH 0 0 0\nH nan 0 0\n", "NaN or inf"),
    ("overlap.xyz", "2\n\nH 0 0 0\nH 0.1 0 0\n", "overlapping atoms"),
    ("X.xyz", "1\n\nX 0 0 0\n", "no element"),
    ("two.xyz", "1\n\nH 0 0 0\n1\n\nH 0 0 1\n", "holds 2 structures"),
    ("POSCAR", "H\n1.0\n1 0 0\n0 1 0\n0 0 0\nH\n1\nCartesian\n0 0 0\n", "degenerate cell"),
    ("thin.extxyz", '1\nLattice="5 0 0 0 0.1 0 0 0 5" Properties=species:S:1:pos:R:3 pbc="T T T"\nH 0 0 0\n',
     "own periodic image"),
    ("long.extxyz", '1\nLattice="1000000 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 pbc="T T T"\nH 0 0 0\n',
     "cell exceed"),  # seed 12345 #1174: a 10^6 A cell made the neighbour search take > 10 s
])
def test_read_structure_faults(tmp_path, name, text, fault):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=fault) as info:
        read_structure(path)
    assert name in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        read_structure(tmp_path / "missing.xyz")


@pytest.mark.parametrize("name, text", [
    ("huge.xyz", "1000000000000\n\nH 0 0 0\n"),
    ("huge.extxyz", '9223372036854775807\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3\nH 0 0 0\n'),
    ("POSCAR", "H\n1.0\n5 0 0\n0 5 0\n0 0 5\nH\n1000000000000\nCartesian\n0 0 0\n"),
    # seed 12345 #913: ASE allocated 21 GB for "2147483648 1000000.0" and the OOM killer stepped in
    ("POSCAR", "Hf O\n1.0\n5 0 0\n0 5 0\n0 0 5\nHf O\n2147483648   1000000.0\nCartesian\n0 0 0\n"),
])
def test_read_structure_huge_declared_count_is_fast(tmp_path, name, text):
    """Seed 7 of the long campaign: ASE trusts the atom count and loops or allocates for ever."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match="declares") as info:
        read_structure(path)
    assert name in str(info.value)


def test_read_structure_huge_property_columns(tmp_path):
    """Seed 12345 of the long campaign: a corrupt extxyz column count made ASE loop for ever."""
    path = tmp_path / "cols.extxyz"
    path.write_text('1\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:300000000000000 pbc="T T T"\n'
                    'H 0 0 0\n')
    with pytest.raises(DataError, match="more than 1000 columns") as info:
        read_structure(path)
    assert "cols.extxyz" in str(info.value)


def test_negative_atomic_number_and_unopenable_card_leave_nothing(tmp_path):
    """Seed 12345 import:deeph #331: Z=-1 passed validation (chemical_symbols[-1] is 'Og'), and the
    card failed to re-open only after the dataset had been renamed into place."""
    from zoo.data.format import DatasetWriter, Record, Structure
    from zoo.data.synthetic import toy_record
    from zoo.data.validate import validate_record
    from zoo.physics.basis import BasisSet, get_basis

    base = get_basis("szv-molopt-sr")
    rec = toy_record(Structure.from_ase(tiny_hfo2(0)), base, 4.0, name="r")
    numbers = rec.numbers.copy()
    numbers[numbers == 8] = -1
    basis = BasisSet("odd", {72: base.element_shells(72), -1: base.element_shells(8)})
    bad = Record("r", Structure(numbers, rec.positions, rec.cell, rec.pbc), basis, rec.edge_index, rec.edge_shift,
                 rec.h_onsite, rec.h_offsite)
    with pytest.raises(DataError, match="outside 1..118"):
        validate_record(bad, path="x.h5")
    with pytest.raises(DataError):
        with DatasetWriter(tmp_path / "out", "odd", basis, 4.0, {"code": "x"}, validate=False) as w:
            w.add(bad)
            w.finalize({"train": ["r"], "val": ["r"], "test": ["r"]})
    assert not any(tmp_path.iterdir())
