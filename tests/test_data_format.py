"""Dataset format: round trip, lazy reading, atomic writing, validation errors."""

import json

import h5py
import numpy as np
import pytest

from tests.conftest import tiny_hfo2, write_toy_dataset
from zoo.data.format import Dataset, DatasetWriter, Record, Structure, read_record, write_record
from zoo.data.synthetic import toy_record
from zoo.data.validate import validate_record
from zoo.errors import DataError, GraphError
from zoo.physics.basis import get_basis

BASIS = get_basis("szv-molopt-sr")


def rec(seed=0, cutoff=4.0):
    return toy_record(Structure.from_ase(tiny_hfo2(seed)), BASIS, cutoff, name=f"r{seed}")


def test_round_trip_bit_for_bit(tmp_path):
    r = rec()
    write_record(tmp_path / "r.h5", r)
    back = read_record(tmp_path / "r.h5")
    for k in ("numbers", "positions", "cell", "pbc", "edge_index", "edge_shift"):
        np.testing.assert_array_equal(getattr(back, k), getattr(r, k))
        assert getattr(back, k).dtype == getattr(r, k).dtype
    for k in ("h_onsite", "h_offsite", "s_onsite", "s_offsite"):
        assert getattr(back, k).tobytes() == getattr(r, k).tobytes()
    assert back.basis.shells == r.basis.shells and back.n_electrons == r.n_electrons and back.meta == r.meta


def test_dataset_open_split_read_and_api(toy_dataset):
    ds = Dataset.open(toy_dataset)
    assert ds.split("test") == ["s2"] and len(ds) == 3
    r = ds.read("s2")
    assert r.numbers.dtype == np.int64 and r.positions.shape == (24, 3)
    blocks = r.onsite_blocks()
    assert blocks[0].shape == (10, 10) and blocks[-1].shape == (4, 4)
    eb = r.edge_blocks()
    i, j = r.edge_index[0]
    assert eb[0].shape == (r.norb[i], r.norb[j])
    eigs = r.eigvalsh()
    assert eigs.shape == (int(r.norb.sum()),) and np.all(np.diff(eigs) >= 0)
    assert ds.card.hash() == Dataset.open(toy_dataset).card.hash()
    with pytest.raises(DataError, match="no split 'holdout'"):
        ds.split("holdout")


def test_writer_is_atomic_and_aborts(tmp_path):
    dest = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with DatasetWriter(dest, "x", BASIS, 4.0, {"code": "synthetic"}) as w:
            w.add(rec(0))
            raise RuntimeError("engine died")
    assert not dest.exists() and not any(tmp_path.iterdir())
    # resumable build keeps finished structures
    w = DatasetWriter(dest, "x", BASIS, 4.0, {"code": "synthetic"}, keep_on_error=True)
    w.add(rec(0))
    w2 = DatasetWriter(dest, "x", BASIS, 4.0, {"code": "synthetic"}, resume=True)
    assert w2.has("r0") and not w2.has("r1")
    w2.add(rec(1))
    with pytest.raises(DataError, match="missing splits"):
        w2.finalize({"train": ["r0"], "test": ["r1"]})
    assert not dest.exists()
    ds = w2.finalize({"train": ["r0"], "val": ["r1"], "test": ["r1"]})
    assert ds.names == ["r0", "r1"]
    with pytest.raises(DataError, match="destination exists"):
        DatasetWriter(dest, "x", BASIS, 4.0, {})


def _expect(r, match, **kw):
    with pytest.raises(DataError, match=match) as info:
        validate_record(r, path="some/file.h5", **kw)
    assert "some/file.h5" in str(info.value)


def test_validation_errors_name_file_and_fault():
    r = rec()
    bad = rec(); bad.structure.numbers[0] = 92
    _expect(bad, r"element U \(Z=92\) is not in basis")
    bad = rec(); bad.h_onsite = bad.h_onsite[:-3]
    _expect(bad, "block shape does not match the basis")
    bad = rec(); bad.h_offsite = bad.h_offsite.copy(); bad.h_offsite[5] = np.nan
    _expect(bad, "NaN/inf")
    bad = rec(); bad.structure.positions[1] = bad.structure.positions[0] + 0.1
    _expect(bad, "overlapping atoms")
    _expect(r, "cell too small for cutoff", cutoff=6.0, image_convention="gamma-folded")
    validate_record(r, cutoff=6.0, image_convention="explicit")  # explicit images are fine
    bad = rec(); bad.edge_index = bad.edge_index.copy(); bad.edge_index[0, 1] = 999
    _expect(bad, "outside")
    assert issubclass(GraphError, DataError)


def test_reader_errors(tmp_path, toy_dataset):
    with pytest.raises(DataError, match="does not exist"):
        read_record(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match="junk.h5: unreadable structure file"):
        read_record(tmp_path / "junk.h5")
    f = toy_dataset / "structures" / "s0.h5"
    with h5py.File(f, "a") as h:
        del h["H/offsite"]
    with pytest.raises(DataError, match=r"s0.h5: missing datasets \['H/offsite'\]"):
        Dataset.open(toy_dataset).read("s0")
    card = json.loads((toy_dataset / "dataset.json").read_text())
    del card["splits"]["val"]
    (toy_dataset / "dataset.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match=r"dataset.json: missing splits \['val'\]"):
        Dataset.open(toy_dataset)
    (toy_dataset / "dataset.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        Dataset.open(toy_dataset)
    with pytest.raises(DataError, match="no dataset.json"):
        Dataset.open(tmp_path)


def test_disk_full_is_a_clear_error_and_keeps_finished_files(tmp_path, monkeypatch):
    import errno

    dest = tmp_path / "ds"
    w = DatasetWriter(dest, "x", BASIS, 4.0, {"code": "synthetic"}, keep_on_error=True)
    w.add(rec(0))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py, "File", full)
    with pytest.raises(DataError, match=r"r1\.h5: disk full .* re-run"):
        w.add(rec(1))
    monkeypatch.undo()
    files = sorted(p.name for p in (w.staging / "structures").iterdir())
    assert files == ["r0.h5"]  # no temp file left, the finished structure kept
    assert w.has("r0")


def test_disk_full_on_a_real_tiny_filesystem(tmp_path):
    """A 96 KiB tmpfs (needs root): the free-space check refuses before HDF5 (which can segfault on ENOSPC) runs."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        w = DatasetWriter(mnt / "ds", "x", BASIS, 4.0, {"code": "synthetic"}, keep_on_error=True)
        big = toy_record(Structure.from_ase(tiny_hfo2(0).repeat((2, 2, 1))), BASIS, 4.0, name="big")
        with pytest.raises(DataError, match=r"big\.h5: disk full: .* MiB free"):
            w.add(big)
        assert not list((w.staging / "structures").iterdir())
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
