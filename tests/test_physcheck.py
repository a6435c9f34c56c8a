"""Physics validation: each finding on a deliberately broken toy record, each repair passing."""

import json

import numpy as np
import pytest

from tests.conftest import tiny_hfo2, write_toy_dataset
from zoo.cli.main import main
from zoo.data.format import Dataset, DatasetWriter, Record, Structure
from zoo.data.physcheck import (check_dataset, check_record, lowest_overlap_eigenvalue, repair_dataset,
                                repair_record, reverse_edges)
from zoo.data.synthetic import toy_record
from zoo.errors import DataError
from zoo.physics.basis import get_basis

BASIS = get_basis("szv-molopt-sr")
CUT = 4.0


@pytest.fixture(scope="module")
def good() -> Record:
    return toy_record(Structure.from_ase(tiny_hfo2(0)), BASIS, CUT, name="r0")


def copy(rec: Record) -> Record:
    return Record(rec.name, rec.structure, rec.basis, rec.edge_index.copy(), rec.edge_shift.copy(),
                  rec.h_onsite.copy(), rec.h_offsite.copy(), rec.s_onsite.copy(), rec.s_offsite.copy(),
                  rec.spinful, rec.n_electrons, dict(rec.meta))


def kinds(rep) -> dict:
    return {(f.matrix, f.kind): f.count for f in rep.findings}


def drop_edge(rec: Record, e: int) -> Record:
    n = rec.norb
    sizes = n[rec.edge_index[:, 0]] * n[rec.edge_index[:, 1]]
    o = np.concatenate([[0], np.cumsum(sizes)])
    keep = np.ones(rec.h_offsite.size, bool)
    keep[o[e]:o[e + 1]] = False
    out = copy(rec)
    out.edge_index = np.delete(rec.edge_index, e, axis=0)
    out.edge_shift = np.delete(rec.edge_shift, e, axis=0)
    out.h_offsite, out.s_offsite = rec.h_offsite[keep], rec.s_offsite[keep]
    return out


def test_good_record_passes(good):
    rep = check_record(good, CUT)
    assert rep.ok and rep.summary() == "ok"
    rev = reverse_edges(good)
    assert (rev >= 0).all() and (rev[rev] == np.arange(good.n_edges)).all()


def test_onsite_nonhermitian_detected_and_repaired(good):
    bad = copy(good)
    bad.h_onsite[1] += 1e-3  # atom 0 (Hf, 10 orbitals): element (0, 1) but not (1, 0)
    bad.s_onsite[1] += 1e-3
    rep = check_record(bad, CUT)
    assert kinds(rep) == {("H", "onsite_nonhermitian"): 1, ("S", "onsite_nonhermitian"): 1}
    assert "1 of 24 atoms" in rep.summary() and rep.repairable
    fixed = repair_record(bad, CUT)
    assert check_record(fixed, CUT).ok
    assert fixed.h_onsite[1] == pytest.approx(good.h_onsite[1] + 5e-4)  # the average of the pair


def test_pair_mismatch_detected_and_repaired(good):
    bad = copy(good)
    bad.h_offsite[:3] += 0.01  # first edge block only: its partner no longer matches
    rep = check_record(bad, CUT, tol=1e-4)
    assert kinds(rep) == {("H", "pair_nonhermitian"): 1}
    assert f"1 of {good.n_edges // 2} pairs" in rep.summary()
    assert check_record(bad, CUT, tol=0.1).ok  # below tolerance
    fixed = repair_record(bad, CUT)
    assert check_record(fixed, CUT).ok and fixed.n_edges == good.n_edges


def test_missing_reverse_detected_and_repaired(good):
    bad = drop_edge(drop_edge(good, 7), 3)
    rep = check_record(bad, CUT)
    assert kinds(rep) == {("", "missing_reverse"): 2}
    fixed = repair_record(bad, CUT)
    assert check_record(fixed, CUT).ok
    # the re-added edges are the transposes, so the repaired record equals the original
    np.testing.assert_array_equal(fixed.edge_index, good.edge_index)
    np.testing.assert_array_equal(fixed.edge_shift, good.edge_shift)
    np.testing.assert_allclose(fixed.h_offsite, good.h_offsite, atol=1e-14)
    np.testing.assert_allclose(fixed.s_offsite, good.s_offsite, atol=1e-14)


def test_beyond_cutoff_detected_and_repaired(good):
    d = np.linalg.norm(good.positions[good.edge_index[:, 1]] + good.edge_shift @ good.cell
                       - good.positions[good.edge_index[:, 0]], axis=1)
    rep = check_record(good, 3.0)
    assert kinds(rep) == {("", "beyond_cutoff"): int((d > 3.0).sum())}
    fixed = repair_record(good, 3.0)
    assert fixed.n_edges == int((d <= 3.0).sum()) and check_record(fixed, 3.0).ok


def test_s_not_positive_definite_dense_and_sparse(good):
    bad = copy(good)
    bad.s_onsite[0] = -2.0  # a diagonal element: S stays symmetric
    rep = check_record(bad, CUT)
    assert kinds(rep) == {("S", "s_not_pd"): 1} and not rep.repairable
    lo_dense, how = lowest_overlap_eigenvalue(bad)
    lo_sparse, how_sparse = lowest_overlap_eigenvalue(bad, dense_max=0)
    assert how == "dense" and how_sparse.startswith("lanczos") and lo_dense < 0
    assert lo_sparse == pytest.approx(lo_dense, abs=1e-5)
    assert check_record(good, CUT, dense_max=0).ok  # the sparse path also passes a good S
    assert not check_record(repair_record(bad, CUT), CUT).ok  # no repair for S


def test_spinful_blocks_use_the_conjugate_transpose(good):
    def spin(flat, rows, cols):
        out = []
        o = 0
        for r, c in zip(rows, cols):
            b = flat[o:o + r * c].reshape(r, c)
            o += r * c
            out.append(np.block([[b, 0.1j * b], [-0.1j * b, b]]).reshape(-1))
        return np.concatenate(out)

    n, ei = good.norb, good.edge_index
    rec = Record("spin", good.structure, good.basis, ei, good.edge_shift,
                 spin(good.h_onsite, n, n), spin(good.h_offsite, n[ei[:, 0]], n[ei[:, 1]]), spinful=True)
    assert check_record(rec, CUT).ok
    bad = Record("spin", rec.structure, rec.basis, ei, rec.edge_shift, rec.h_onsite.copy(), rec.h_offsite.copy(),
                 spinful=True)
    bad.h_onsite[1] += 0.01j
    assert kinds(check_record(bad, CUT)) == {("H", "onsite_nonhermitian"): 1}
    assert check_record(repair_record(bad, CUT), CUT).ok


def _broken_dataset(path):
    """A 3-structure toy dataset whose s1 has a non-hermitian on-site block and a missing reverse edge."""
    recs = [toy_record(Structure.from_ase(tiny_hfo2(k)), BASIS, CUT, name=f"s{k}") for k in range(3)]
    bad = drop_edge(recs[1], 5)
    bad.h_onsite[2] += 0.05
    recs[1] = bad
    with DatasetWriter(path, "broken", BASIS, CUT, {"code": "synthetic"}) as w:
        for r in recs:
            w.add(r)
        w.finalize({"train": ["s0"], "val": ["s1"], "test": ["s2"]})
    return path


def test_check_and_repair_dataset(tmp_path):
    src = _broken_dataset(tmp_path / "ds")
    reports = check_dataset(src)
    assert [r.ok for r in reports] == [True, False, True]
    with pytest.raises(DataError, match=r"s1.h5: structure 's1' fails the physics check: inconsistent image shifts: "
                                        r"1 of \d+ edges .*H on-site blocks not hermitian: 1 of 24 atoms"):
        check_dataset(src, strict=True)
    out, before, after = repair_dataset(src, tmp_path / "fixed")
    assert out == tmp_path / "fixed" and all(r.ok for r in after) and not before[1].ok
    ds = Dataset.open(out)
    assert ds.card.splits == Dataset.open(src).card.splits
    assert ds.card.provenance["physcheck_repair"]["findings"] == {"missing_reverse": 1, "H:onsite_nonhermitian": 1}
    assert all(r.ok for r in check_dataset(out))
    with pytest.raises(DataError, match="destination exists"):
        repair_dataset(src, out)
    # in place: the same directory, now passing, with no staging or backup left beside it
    repair_dataset(src)
    assert all(r.ok for r in check_dataset(src))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "fixed"]


def test_repair_refuses_unrepairable_and_leaves_nothing(tmp_path, good):
    bad = copy(good)
    bad.s_onsite[0] = -2.0
    src = tmp_path / "ds"
    with DatasetWriter(src, "x", BASIS, CUT, {"code": "synthetic"}) as w:
        w.add(bad)
        w.finalize({"train": ["r0"], "val": ["r0"], "test": ["r0"]})
    card_before = (src / "dataset.json").read_text()
    with pytest.raises(DataError, match="no well-defined repair: S\\(Gamma\\) is not positive definite"):
        repair_dataset(src, tmp_path / "out")
    with pytest.raises(DataError, match="no well-defined repair"):
        repair_dataset(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert (src / "dataset.json").read_text() == card_before


def test_cli_check_strict_repair_json(tmp_path, capsys):
    good_ds = write_toy_dataset(tmp_path / "good", n=3)
    assert main(["data", "check", str(good_ds)]) == 0
    assert "3 of 3 structures pass" in capsys.readouterr().out
    src = _broken_dataset(tmp_path / "bad")
    assert main(["data", "check", str(src), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["failing"] == 1 and {f["kind"] for f in out["reports"][1]["findings"]} == {
        "missing_reverse", "onsite_nonhermitian"}
    assert main(["data", "check", str(src), "--strict"]) == 1
    assert "fails the physics check" in capsys.readouterr().err
    assert main(["data", "check", str(src), "--repair", "-o", str(tmp_path / "fixed")]) == 0
    assert "repaired 1 of 3 structures" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "fixed")]) == 0
    assert main(["data", "check", str(src), "--output", str(tmp_path / "x")]) == 1  # --output needs --repair


def test_chunked_passes_match_one_pass(good):
    from zoo.data.physcheck import _deviation, _hermitian_average
    from zoo.physics.assembly import block_offsets

    bad = copy(good)
    rng = np.random.default_rng(0)
    bad.h_offsite += 1e-3 * rng.standard_normal(bad.h_offsite.size)
    n, ei = bad.norb, bad.edge_index
    ni, nj, rev = n[ei[:, 0]], n[ei[:, 1]], reverse_edges(bad)
    o = block_offsets(ni, nj)
    one = _deviation(bad.h_offsite, o, ni, nj, rev, chunk=1 << 30)
    assert one.min() > 0
    np.testing.assert_array_equal(_deviation(bad.h_offsite, o, ni, nj, rev, chunk=37), one)
    avg = _hermitian_average(bad.h_offsite, o, ni, nj, rev, chunk=1 << 30)
    np.testing.assert_array_equal(_hermitian_average(bad.h_offsite, o, ni, nj, rev, chunk=1), avg)
    assert _deviation(avg, o, ni, nj, rev, chunk=50).max() < 1e-15


def test_repair_of_huge_values_does_not_overflow(good):
    """Seed 12345 repair_dataset #236: (1e308 + 1e308) / 2 overflowed to inf."""
    bad = copy(good)
    bad.h_onsite[1] = 1e308
    bad.h_onsite[10] = 1e308  # (0, 1) and (1, 0) of atom 0: symmetric, but huge
    bad.h_onsite[2] = 1e308  # (0, 2) only: not symmetric
    fixed = repair_record(bad, CUT)
    assert np.isfinite(fixed.h_onsite).all() and fixed.h_onsite[1] == 1e308 and fixed.h_onsite[2] == 5e307
