"""Fuzzing the importers: every damaged source ends in a DataError naming the file and the fault
(or imports fine), never a bare h5py/numpy/ase/json exception, a hang, or a partial dataset.

Default run: a seeded campaign of 40 damaged sources per importer (~15 s) plus regressions for
the escapes the long campaign found. The long campaign: `python -m tests.fuzz.campaign --n 2000
--readers import:cp2k,import:deeph,import:deeptb,import:gears,import:hamgnn,import:schnorb`.
"""

from __future__ import annotations

import json
import zipfile

import h5py
import numpy as np
import pytest

import tests.test_importers as T
from tests.fuzz.campaign import run_campaign
from tests.fuzz.targets import importer_targets
from zoo.data.importers import import_dataset
from zoo.data.importers.common import h5_array, h5_open, load_txt, numeric_array, read_text
from zoo.data.synthetic import toy_record
from zoo.errors import DataError

N_PER_IMPORTER = 40
FORMATS = ("cp2k", "deeph", "deeptb", "gears", "hamgnn", "schnorb")


def test_importer_campaign_has_no_escapes(tmp_path):
    targets = importer_targets()
    names = {f"import:{f}" for f in FORMATS}
    assert names <= {t.name for t in targets}
    counts = {n: N_PER_IMPORTER for n in names}
    result = run_campaign([t for t in targets if t.name in names], counts, seed=7, workdir=tmp_path)
    print(result.table())
    assert not result.escapes, "\n".join(map(str, result.escapes))
    for n in names:  # the damage bites: most sources are rejected, with an error naming the file
        assert result.tried[n] == N_PER_IMPORTER
        assert result.rejected[n] >= N_PER_IMPORTER // 3, (n, result.table())


# -- regressions of escapes the long campaign found ------------------------------------------

@pytest.fixture(scope="module")
def rec():
    return toy_record(T.box_structure(), T.HFO, 4.0, name="a")


def _fault(fmt, src, dest, file_name, words, **opts) -> str:
    with pytest.raises(DataError) as ei:
        import_dataset(fmt, src, dest, name="bad", **opts)
    msg = str(ei.value)
    assert file_name in msg, msg
    assert any(w in msg for w in words), msg
    T.no_leftovers(dest)
    return msg


def test_deeph_undecodable_text_and_bad_json(tmp_path, rec):
    T.write_deeph(tmp_path / "src", rec)
    (tmp_path / "src" / "info.json").write_bytes(b'{"isspinful": \xe6\xff}')
    _fault("deeph", tmp_path / "src", tmp_path / "out", "info.json", ["UTF-8"])
    (tmp_path / "src" / "info.json").write_text(json.dumps({"isspinful": False, "zoo": [1]}))
    _fault("deeph", tmp_path / "src", tmp_path / "out", "info.json", ["'zoo' must be an object"])


def test_deeph_group_in_place_of_block_and_string_block(tmp_path, rec):
    T.write_deeph(tmp_path / "src", rec)
    key = json.dumps([0, 0, 0, 2, 2])
    with h5py.File(tmp_path / "src" / "overlaps.h5", "a") as f:
        del f[key]
        f.create_group(key)
    _fault("deeph", tmp_path / "src", tmp_path / "out", "overlaps.h5", ["is a group"])
    with h5py.File(tmp_path / "src" / "overlaps.h5", "a") as f:
        del f[key]
        f[key] = np.array([b"abc", b"def"])
    _fault("deeph", tmp_path / "src", tmp_path / "out", "overlaps.h5", ["expected numbers"])


def test_deeph_corrupt_h5_metadata(tmp_path, rec):
    T.write_deeph(tmp_path / "src", rec)
    p = tmp_path / "src" / "hamiltonians.h5"
    data = bytearray(p.read_bytes())
    data[1670:1670 + 27] = data[1670 - 200:1670 - 173]  # the campaign's "dup" damage of a symbol table
    data[len(data) // 2:len(data) // 2 + 125] = bytes(125)
    p.write_bytes(bytes(data))
    _fault("deeph", tmp_path / "src", tmp_path / "out", "hamiltonians.h5",
           ["HDF5", "dataset", "block", "shape", "NaN", "orbital"])


def test_deeph_element_outside_periodic_table(tmp_path, rec):
    T.write_deeph(tmp_path / "src", rec)
    z = (tmp_path / "src" / "element.dat").read_text().split()
    (tmp_path / "src" / "element.dat").write_text("\n".join(["250"] + z[1:]) + "\n")
    _fault("deeph", tmp_path / "src", tmp_path / "out", "element.dat", ["not an element"])


def test_deeptb_empty_atomic_numbers_and_bad_cell(tmp_path, rec):
    T.write_deeptb(tmp_path / "src", rec, {"Hf": "2s1p1d", "O": "1s1p"})
    cell = (tmp_path / "src" / "cell.dat").read_text()
    (tmp_path / "src" / "cell.dat").write_text("\n".join(cell.splitlines()[:2]) + "\n")
    _fault("deeptb", tmp_path / "src", tmp_path / "out", "cell.dat", ["3 x 3"])
    (tmp_path / "src" / "cell.dat").write_text(cell)
    (tmp_path / "src" / "atomic_numbers.dat").write_text("")
    _fault("deeptb", tmp_path / "src", tmp_path / "out", "atomic_numbers.dat", ["empty"])
    (tmp_path / "src" / "pbc.dat").write_bytes(b"1 1 \xb0")
    (tmp_path / "src" / "atomic_numbers.dat").write_text("72\n72\n8\n8\n8\n8\n")
    _fault("deeptb", tmp_path / "src", tmp_path / "out", "pbc.dat", ["UTF-8"])


def test_deeptb_absurd_shell_counts(tmp_path, rec):
    T.write_deeptb(tmp_path / "src", rec, {"Hf": "2s1p1d", "O": "1s1p"})
    (tmp_path / "src" / "basis.dat").write_text("{'Hf': '2s1p1d', 'O': '99999999999999999999s1p'}")
    _fault("deeptb", tmp_path / "src", tmp_path / "out", "basis.dat", ["more than"])
    (tmp_path / "src" / "basis.dat").write_text("{'Hf': [0, 0, 1, 2], 'O': [0, 17]}")
    _fault("deeptb", tmp_path / "src", tmp_path / "out", "basis.dat", ["values of l in 0..6"])


def test_cp2k_structure_read_like_user_files(tmp_path, rec):
    T.write_cp2k(tmp_path / "src", rec)
    xyz = tmp_path / "src" / "structure.xyz"
    lines = xyz.read_text().splitlines()
    xyz.write_text("\n".join(["38614909"] + lines[1:]) + "\n")  # a corrupt count once hung ASE
    _fault("cp2k", tmp_path / "src", tmp_path / "out", "structure.xyz", ["declares"], basis=T.HFO)
    bad = lines[1].replace('Lattice="8.4', 'Lattice="nan', 1)
    assert bad != lines[1]
    xyz.write_text("\n".join([lines[0], bad] + lines[2:]) + "\n")  # must not fall back to a cell-less xyz
    _fault("cp2k", tmp_path / "src", tmp_path / "out", "structure.xyz", ["NaN"], basis=T.HFO)


def test_schnorb_truncated_database(tmp_path, rec):
    from zoo.data.format import Structure
    from zoo.physics.basis import get_basis

    st = Structure([8, 1, 1], [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]], np.zeros((3, 3)), False)
    T.write_schnorb(tmp_path / "w.db", [toy_record(st, get_basis("def2-svp"), 10.0, name="m")])
    data = (tmp_path / "w.db").read_bytes()
    for cut in (len(data) - 1500, len(data) // 2):
        (tmp_path / "t.db").write_bytes(data[:cut])
        try:
            import_dataset("schnorb", tmp_path / "t.db", tmp_path / "out", name="x")
        except DataError as exc:
            assert "t.db" in str(exc)
        T.no_leftovers(tmp_path / "out")


def test_gears_unknown_zip_compression(tmp_path, rec):
    T.write_gears(tmp_path / "src", rec)
    p = tmp_path / "src" / "ijD.npz"
    with zipfile.ZipFile(p) as zf:
        infos = zf.infolist()
    data = bytearray(p.read_bytes())
    for info in infos:  # compression method 99 in the local header: zipfile raises NotImplementedError
        data[info.header_offset + 8:info.header_offset + 10] = (99).to_bytes(2, "little")
    start = data.find(b"PK\x01\x02")
    while start >= 0:  # ... and in the central directory
        data[start + 10:start + 12] = (99).to_bytes(2, "little")
        start = data.find(b"PK\x01\x02", start + 4)
    p.write_bytes(bytes(data))
    _fault("gears", tmp_path / "src", tmp_path / "out", "ijD.npz", ["unreadable .npz"])


# -- the shared readers --------------------------------------------------------------------

def test_shared_readers_turn_faults_into_data_errors(tmp_path):
    (tmp_path / "bin.dat").write_bytes(b"1 2 \xff\xfe")
    with pytest.raises(DataError, match="bin.dat.*UTF-8"):
        read_text(tmp_path / "bin.dat")
    with pytest.raises(DataError, match="missing"):
        read_text(tmp_path / "nothing.dat")
    (tmp_path / "n.dat").write_text("1 2\n3 nan\n")
    with pytest.raises(DataError, match="NaN"):
        load_txt(tmp_path / "n.dat")
    (tmp_path / "i.dat").write_text("1 2.5\n")
    with pytest.raises(DataError, match="integers"):
        load_txt(tmp_path / "i.dat", np.int64)
    np.testing.assert_array_equal(load_txt(tmp_path / "i.dat"), [1.0, 2.5])
    with pytest.raises(DataError, match="complex"):
        numeric_array(np.array([1j]), tmp_path / "x", "block")
    with pytest.raises(DataError, match="expected numbers"):
        numeric_array(np.array(["a"]), tmp_path / "x", "block")
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["ok"] = np.eye(2)
        f.create_group("grp")
    with h5_open(tmp_path / "f.h5") as f:
        np.testing.assert_array_equal(h5_array(f, "ok", tmp_path / "f.h5"), np.eye(2))
        with pytest.raises(DataError, match="f.h5.*is a group"):
            h5_array(f, "grp", tmp_path / "f.h5")
        with pytest.raises(DataError, match="cannot read dataset 'nope'"):
            h5_array(f, "nope", tmp_path / "f.h5")
    (tmp_path / "g.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="g.h5.*unreadable HDF5"):
        with h5_open(tmp_path / "g.h5"):
            pass
