"""Importers on synthetic files written in each code's convention and units from a known rotated
structure: the imported rotated blocks must equal D B D^T of the imported original (a wrong
permutation, sign, transposition, shift or unit fails), and equal the known internal blocks.
Plus bad input (one DataError naming the file, nothing left behind), splits and the DeepH export
round trip. Real files: tests/test_importers_realdata.py."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write as ase_write

from zoo.data.export import export_dataset
from zoo.data.format import DatasetWriter, Record, Structure
from zoo.data.importers import import_dataset
from zoo.data.importers.common import make_splits
from zoo.data.synthetic import toy_record
from zoo.errors import ConfigError, DataError
from zoo.physics.basis import BasisSet, get_basis
from zoo.physics.conventions import block_from_internal
from zoo.physics.units import BOHR_ANG, HARTREE_EV
from zoo.physics.wigner import random_rotation, wigner_D_shells

HFO = BasisSet("hfo", {72: (0, 0, 1, 2), 8: (0, 1)})


def box_structure(n_hf: int = 2, n_o: int = 4, a: float = 8.4, seed: int = 1, pbc: bool = True) -> Structure:
    """A few atoms at >= 1.9 A from each other (and their images) in a cubic box."""
    rng = np.random.default_rng(seed)
    pos: list[np.ndarray] = []
    while len(pos) < n_hf + n_o:
        p = rng.uniform(0, a, 3)
        if all(np.linalg.norm((p - q + a / 2) % a - a / 2) > 1.9 for q in pos):
            pos.append(p)
    return Structure([72] * n_hf + [8] * n_o, np.array(pos), np.eye(3) * a if pbc else np.zeros((3, 3)), pbc)


def rotated(st: Structure, R: np.ndarray) -> Structure:
    return Structure(st.numbers, st.positions @ R.T, st.cell @ R.T, st.pbc)


def pair(basis: BasisSet, cutoff: float = 4.0, seed: int = 3, **kw) -> tuple[np.ndarray, Record, Record]:
    st = box_structure(**kw)
    R = random_rotation(seed).numpy()
    return R, toy_record(st, basis, cutoff, name="a"), toy_record(rotated(st, R), basis, cutoff, name="b")


def code_blocks(rec: Record, convention: str, which: str = "H", factor: float = 1.0):
    """(on-site, edge) blocks of `rec` converted from internal to `convention`, times `factor`."""
    sh = [rec.basis.element_shells(z) for z in rec.numbers]
    on = [block_from_internal(b, sh[i], sh[i], convention) * factor for i, b in enumerate(rec.onsite_blocks(which))]
    off = [block_from_internal(b, sh[i], sh[j], convention) * factor
           for (i, j), b in zip(rec.edge_index, rec.edge_blocks(which))]
    return on, off


def dense_code(rec: Record, convention: str, which: str = "H", factor: float = 1.0) -> np.ndarray:
    """Gamma-point matrix in the code's orbital order (what CP2K / SchNOrb files hold)."""
    on, off = code_blocks(rec, convention, which, factor)
    n = rec.norb
    o = np.concatenate([[0], np.cumsum(n)])
    m = np.zeros((o[-1], o[-1]))
    for i, b in enumerate(on):
        m[o[i]:o[i + 1], o[i]:o[i + 1]] += b
    for (i, j), b in zip(rec.edge_index, off):
        m[o[i]:o[i + 1], o[j]:o[j + 1]] += b
    return m


def blocks_by_key(rec: Record, which: str = "H") -> dict:
    d = {("on", i): b for i, b in enumerate(rec.onsite_blocks(which))}
    d.update({(int(i), int(j), *map(int, s)): b for (i, j), s, b in zip(rec.edge_index, rec.edge_shift,
                                                                          rec.edge_blocks(which))})
    return d


def check_import(imp_a: Record, imp_b: Record, ref_a: Record, R: np.ndarray, overlap: bool = True) -> None:
    """imported(b) = D imported(a) D^T block by block, and imported(a) = the known internal blocks."""
    for which in ("H", "S") if overlap else ("H",):
        a, b, ref = blocks_by_key(imp_a, which), blocks_by_key(imp_b, which), blocks_by_key(ref_a, which)
        assert set(a) == set(ref) == set(b), "imported edges differ from the written ones"
        D = {int(z): wigner_D_shells(imp_a.basis.element_shells(z), torch.as_tensor(R)).numpy()
             for z in set(imp_a.numbers.tolist())}
        z = imp_a.numbers
        for k, blk in a.items():
            i, j = (k[1], k[1]) if k[0] == "on" else k[:2]
            np.testing.assert_allclose(blk, ref[k], atol=1e-12, err_msg=f"{which} {k} differs from the source")
            np.testing.assert_allclose(b[k], D[z[i]] @ blk @ D[z[j]].T, atol=1e-10,
                                       err_msg=f"{which} {k} is not D B D^T (wrong permutation or sign)")


def no_leftovers(dest: Path) -> None:
    assert not dest.exists()
    assert not (dest.parent / f".{dest.name}.partial").exists()


# -- writers in each code's convention ---------------------------------------------------------

def write_cp2k(d: Path, rec: Record, triangle: str = "upper") -> None:
    d.mkdir(parents=True)
    ase_write(d / "structure.xyz", rec.structure.to_ase(), format="extxyz")
    for which, fn in (("H", "H.csr"), ("S", "S.csr")):
        m = dense_code(rec, "cp2k", which)
        r, c = np.nonzero(np.triu(m) if triangle == "upper" else m)
        np.savetxt(d / fn, np.column_stack([r + 1, c + 1, m[r, c]]), fmt=["%d", "%d", "%.17e"])


def write_deeph(d: Path, rec: Record) -> None:
    d.mkdir(parents=True)
    np.savetxt(d / "element.dat", rec.numbers, fmt="%d")
    np.savetxt(d / "site_positions.dat", rec.positions.T)
    np.savetxt(d / "lat.dat", rec.cell.T)
    (d / "orbital_types.dat").write_text("".join(" ".join(map(str, rec.basis.element_shells(z))) + "\n"
                                                 for z in rec.numbers))
    (d / "info.json").write_text(json.dumps({"isspinful": False, "fermi_level": -3.0}))
    for which, fn, f in (("H", "hamiltonians.h5", HARTREE_EV), ("S", "overlaps.h5", 1.0)):
        on, off = code_blocks(rec, "openmx", which, f)
        with h5py.File(d / fn, "w") as h:
            for i, b in enumerate(on):
                h[json.dumps([0, 0, 0, i + 1, i + 1])] = b
            for (i, j), s, b in zip(rec.edge_index, rec.edge_shift, off):
                h[json.dumps([*map(int, s), int(i) + 1, int(j) + 1])] = b


def write_deeptb(d: Path, rec: Record, shells: dict) -> None:
    d.mkdir(parents=True)
    np.savetxt(d / "atomic_numbers.dat", rec.numbers, fmt="%d")
    np.savetxt(d / "positions.dat", rec.positions)
    np.savetxt(d / "cell.dat", rec.cell)
    np.savetxt(d / "pbc.dat", rec.pbc.astype(float))
    (d / "basis.dat").write_text(repr(shells))
    for which, fn, f in (("H", "hamiltonians.h5", HARTREE_EV), ("S", "overlaps.h5", 1.0)):
        on, off = code_blocks(rec, "deeptb", which, f)
        with h5py.File(d / fn, "w") as h:
            g = h.create_group("0")
            for i, b in enumerate(on):
                g[f"{i}_{i}_0_0_0"] = b
            for (i, j), s, b in zip(rec.edge_index, rec.edge_shift, off):
                g[f"{i}_{j}_{s[0]}_{s[1]}_{s[2]}"] = b


def write_gears(d: Path, rec: Record, with_s: bool = True) -> None:
    import scipy.sparse as sp

    d.mkdir(parents=True)
    ase_write(d / "atoms.extxyz", rec.structure.to_ase(), format="extxyz")
    ells = {str(z): list(rec.basis.element_shells(z)) for z in set(rec.numbers.tolist())}
    (d / "orbital_ells.json").write_text(json.dumps(ells))
    on, off = code_blocks(rec, "gpaw", "H", HARTREE_EV)
    vec = rec.positions[rec.edge_index[:, 1]] + rec.edge_shift @ rec.cell - rec.positions[rec.edge_index[:, 0]]
    np.savez(d / "ijD.npz", ij=rec.edge_index, D=vec)
    ragged_on = np.empty(len(on), dtype=object)
    ragged_on[:] = on
    ragged_off = np.empty(len(off), dtype=object)
    ragged_off[:] = off
    np.savez(d / "hblocks_on-diagonal.npz", hblocks=ragged_on)
    np.savez(d / "hblocks_off-diagonal.npz", hblocks=ragged_off)
    if with_s:
        np.savez(d / "H_MM_S_MM.npz", S_MM=sp.csr_matrix(dense_code(rec, "gpaw", "S")))


def index_14(z: int) -> list[int]:
    """Padded positions in HamGNN's nao_max = 14 layout (3s 2p 1d), written out by hand."""
    return {72: [0, 1, 3, 4, 5, 9, 10, 11, 12, 13], 8: [0, 3, 4, 5]}[z]


def write_hamgnn(path: Path, recs: list[Record]) -> None:
    from torch_geometric.data import Data

    graphs = {}
    for k, rec in enumerate(recs):
        def pad(blocks, zi, zj, f):
            out = np.zeros((len(blocks), 14, 14))
            for e, (b, a, c) in enumerate(zip(blocks, zi, zj)):
                out[e][np.ix_(index_14(a), index_14(c))] = b
            return torch.as_tensor(out.reshape(len(blocks), 196))

        z = rec.numbers
        ei = rec.edge_index
        data = {}
        for which, key in (("H", "H"), ("S", "S")):
            on, off = code_blocks(rec, "openmx", which, HARTREE_EV if which == "H" else 1.0)
            data[key + "on"] = pad(on, z, z, 1)
            data[key + "off"] = pad(off, z[ei[:, 0]], z[ei[:, 1]], 1)
        graphs[k] = Data(z=torch.as_tensor(z), pos=torch.as_tensor(rec.positions),
                         cell=torch.as_tensor(rec.cell)[None], edge_index=torch.as_tensor(ei.T.copy()),
                         cell_shift=torch.as_tensor(rec.edge_shift),
                         nbr_shift=torch.as_tensor(rec.edge_shift @ rec.cell), **data)
    np.savez(path, graph=graphs)


def write_schnorb(path: Path, recs: list[Record]) -> None:
    from ase.db import connect

    with connect(str(path)) as db:
        for rec in recs:
            db.write(Atoms(numbers=rec.numbers, positions=rec.positions),
                     data={"hamiltonian": dense_code(rec, "orca", "H"), "overlap": dense_code(rec, "orca", "S")})


# -- the rotation tests ------------------------------------------------------------------------

def _import_both(tmp_path, fmt, writer, ra, rb, **opts):
    writer(tmp_path / "src_a", ra)
    writer(tmp_path / "src_b", rb)
    da = import_dataset(fmt, tmp_path / "src_a", tmp_path / "a", name="a", **opts)
    db = import_dataset(fmt, tmp_path / "src_b", tmp_path / "b", name="b", **opts)
    return da, db, da.read(da.names[0]), db.read(db.names[0])


def test_cp2k_rotation_and_gamma_folding(tmp_path):
    basis = get_basis("szv-molopt-sr")
    R, ra, rb = pair(basis)
    da, _, ia, ib = _import_both(tmp_path, "cp2k", write_cp2k, ra, rb, basis="szv-molopt-sr")
    check_import(ia, ib, ra, R)
    assert da.card.image_convention == "gamma-folded"
    assert da.card.provenance["source_units"]["energy"] == "hartree" and da.card.provenance["source_index_base"] == 1
    assert da.card.level_of_theory["code"] == "CP2K"


def test_cp2k_full_matrix_and_xia_comment_box(tmp_path):
    basis = get_basis("szv-molopt-sr")
    _, ra, _ = pair(basis)
    write_cp2k(tmp_path / "src", ra, triangle="full")
    # Xia et al. style: plain xyz whose comment line ends with the box edges
    lines = ["%d" % ra.n_atoms, "converted by cp2k 8.4, 8.4, 8.4"]
    lines += [f"{s} {x:.12f} {y:.12f} {z:.12f}" for s, (x, y, z) in
              zip(ra.structure.to_ase().get_chemical_symbols(), ra.positions)]
    (tmp_path / "src" / "structure.xyz").write_text("\n".join(lines) + "\n")
    ds = import_dataset("cp2k", tmp_path / "src", tmp_path / "out", name="x", basis="szv-molopt-sr")
    rec = ds.read(ds.names[0])
    np.testing.assert_allclose(rec.cell, np.eye(3) * 8.4)
    check_import(rec, rec, ra, np.eye(3))


def test_deeph_rotation(tmp_path):
    R, ra, rb = pair(HFO)
    da, _, ia, ib = _import_both(tmp_path, "deeph", write_deeph, ra, rb)
    check_import(ia, ib, ra, R)
    assert ia.basis.element_shells(72) == (0, 0, 1, 2)
    assert da.card.provenance["source_convention"] == "openmx"


def test_deeptb_rotation(tmp_path):
    R, ra, rb = pair(HFO)
    shells = {"Hf": "2s1p1d", "O": "1s1p"}
    _, _, ia, ib = _import_both(tmp_path, "deeptb", lambda d, r: write_deeptb(d, r, shells), ra, rb)
    check_import(ia, ib, ra, R)


def test_gears_rotation_with_unsorted_shells_and_overlap(tmp_path):
    basis = BasisSet("gpaw-like", {72: (2, 0, 0, 1), 8: (0, 1)})  # W-like: d shell first
    R, ra, rb = pair(basis)
    da, _, ia, ib = _import_both(tmp_path, "gears", write_gears, ra, rb)
    check_import(ia, ib, ra, R)
    assert da.card.image_convention == "gamma-folded" and da.card.has_overlap


def test_hamgnn_rotation(tmp_path):
    R, ra, rb = pair(HFO)
    _, _, ia, ib = _import_both(tmp_path, "hamgnn", lambda d, r: (d.mkdir(), write_hamgnn(d / "graph_data.npz", [r])),
                                ra, rb, basis={"Hf": [0, 0, 1, 2], "O": [0, 1]})
    check_import(ia, ib, ra, R)


def test_schnorb_rotation_molecules_and_splits(tmp_path):
    basis = get_basis("def2-svp")
    st = Structure([8, 1, 1], [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]], np.zeros((3, 3)), False)
    R = random_rotation(5).numpy()
    recs = [toy_record(Structure(st.numbers, st.positions * (1 + 0.02 * k), st.cell, st.pbc), basis, 10.0, name=f"m{k}")
            for k in range(4)]
    rot = [toy_record(rotated(r.structure, R), basis, 10.0) for r in recs]
    write_schnorb(tmp_path / "a.db", recs)
    write_schnorb(tmp_path / "b.db", rot)
    da = import_dataset("schnorb", tmp_path / "a.db", tmp_path / "a", name="a", splits=[0.5, 0.25, 0.25])
    db = import_dataset("schnorb", tmp_path / "b.db", tmp_path / "b", name="b")
    for k in range(4):
        check_import(da.read(da.names[k]), db.read(db.names[k]), recs[k], R)
    sp = da.card.splits
    assert sorted(sp["train"] + sp["val"] + sp["test"]) == sorted(da.names) and all(sp.values())
    assert "random split" in da.card.provenance["splits_note"]


# -- splits ------------------------------------------------------------------------------------

def test_make_splits():
    one, note = make_splits(["x"])
    assert one == {"train": ["x"], "val": ["x"], "test": ["x"]} and "single" in note
    names = [f"s{k}" for k in range(10)]
    sp, _ = make_splits(names, (0.6, 0.2, 0.2), seed=1)
    assert [len(sp[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(sp["train"] + sp["val"] + sp["test"]) == sorted(names)
    sp3, _ = make_splits(names[:3], (1.0, 0.0, 0.0))
    assert all(len(v) == 1 for v in sp3.values())
    with pytest.raises(DataError):
        make_splits(names, (0.5, 0.5))


# -- bad input ---------------------------------------------------------------------------------

def _expect_fault(fmt, src, dest, fault_words, file_hint, **opts):
    with pytest.raises(DataError) as ei:
        import_dataset(fmt, src, dest, name="bad", **opts)
    msg = str(ei.value)
    assert file_hint in msg, f"the error does not name the file: {msg}"
    assert any(w in msg for w in fault_words), f"the error does not name the fault: {msg}"
    no_leftovers(dest)
    return msg


@pytest.fixture(scope="module")
def one_rec():
    return toy_record(box_structure(), HFO, 4.0, name="a")


def test_bad_cp2k_truncated(tmp_path, one_rec):
    write_cp2k(tmp_path / "src", one_rec)
    text = (tmp_path / "src" / "H.csr").read_text().splitlines()
    (tmp_path / "src" / "H.csr").write_text("\n".join(text[:-1] + [" ".join(text[-1].split()[:2])]) + "\n")
    _expect_fault("cp2k", tmp_path / "src", tmp_path / "out", ["truncated", "incomplete"], "H.csr", basis=HFO)


def test_bad_cp2k_unknown_basis_and_element(tmp_path, one_rec):
    write_cp2k(tmp_path / "src", one_rec)
    _expect_fault("cp2k", tmp_path / "src", tmp_path / "out", ["unknown basis set"], "H.csr", basis="nonsense-svp")
    # szv-molopt-sr has Hf and O; a structure with Xe has no basis
    atoms = one_rec.structure.to_ase()
    atoms.numbers[0] = 54
    ase_write(tmp_path / "src" / "structure.xyz", atoms, format="extxyz")
    _expect_fault("cp2k", tmp_path / "src", tmp_path / "out", ["Xe"], "structure.xyz", basis="szv-molopt-sr")


def test_bad_cp2k_orbital_count(tmp_path, one_rec):
    write_cp2k(tmp_path / "src", one_rec)
    # a basis with fewer orbitals per Hf: the file's indices run past the structure's orbitals
    _expect_fault("cp2k", tmp_path / "src", tmp_path / "out", ["mismatched"], "H.csr",
                  basis={"Hf": [0, 1], "O": [0, 1]})


def test_bad_deeptb_wrong_key(tmp_path, one_rec):
    write_deeptb(tmp_path / "src", one_rec, {"Hf": "2s1p1d", "O": "1s1p"})
    with h5py.File(tmp_path / "src" / "hamiltonians.h5", "a") as f:
        f["0"]["0-1-0-0-0"] = np.zeros((10, 4))
    _expect_fault("deeptb", tmp_path / "src", tmp_path / "out", ["i_j_Rx_Ry_Rz"], "hamiltonians.h5")


def test_bad_deeptb_basis_mismatch(tmp_path, one_rec):
    write_deeptb(tmp_path / "src", one_rec, {"Hf": "2s1p1d", "O": "1s1p1d"})
    _expect_fault("deeptb", tmp_path / "src", tmp_path / "out", ["mismatched orbital count"], "hamiltonians.h5")


def test_bad_deeph_atom_count(tmp_path, one_rec):
    write_deeph(tmp_path / "src", one_rec)
    with open(tmp_path / "src" / "element.dat", "a") as f:
        f.write("8\n")
    _expect_fault("deeph", tmp_path / "src", tmp_path / "out", ["mismatched atom count"], "orbital_types.dat")


def test_bad_deeph_truncated_h5(tmp_path, one_rec):
    write_deeph(tmp_path / "src", one_rec)
    p = tmp_path / "src" / "hamiltonians.h5"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    _expect_fault("deeph", tmp_path / "src", tmp_path / "out", ["unreadable HDF5"], "hamiltonians.h5")


def test_bad_gears_truncated_npz_and_counts(tmp_path, one_rec):
    basis_rec = toy_record(box_structure(), BasisSet("g", {72: (2, 0, 0, 1), 8: (0, 1)}), 4.0)
    write_gears(tmp_path / "src", basis_rec, with_s=False)
    p = tmp_path / "src" / "hblocks_off-diagonal.npz"
    good = p.read_bytes()
    p.write_bytes(good[: len(good) // 3])
    _expect_fault("gears", tmp_path / "src", tmp_path / "out", ["unreadable .npz"], "hblocks_off-diagonal.npz")
    p.write_bytes(good)
    ij = np.load(tmp_path / "src" / "ijD.npz")
    np.savez(tmp_path / "src" / "ijD.npz", ij=ij["ij"][:-1], D=ij["D"][:-1])
    _expect_fault("gears", tmp_path / "src", tmp_path / "out", ["disagree"], "ijD.npz")


def test_gears_refuses_code_in_pickles(tmp_path, one_rec):
    basis_rec = toy_record(box_structure(), BasisSet("g", {72: (2, 0, 0, 1), 8: (0, 1)}), 4.0)
    write_gears(tmp_path / "src", basis_rec, with_s=False)
    evil = np.empty(1, dtype=object)
    evil[0] = Path("/")  # any non-numeric object: refused, not executed
    np.savez(tmp_path / "src" / "hblocks_on-diagonal.npz", hblocks=evil)
    _expect_fault("gears", tmp_path / "src", tmp_path / "out", ["refusing to unpickle"], "hblocks_on-diagonal.npz")


def test_bad_hamgnn_padding(tmp_path, one_rec):
    write_hamgnn(tmp_path / "g.npz", [one_rec])
    _expect_fault("hamgnn", tmp_path / "g.npz", tmp_path / "out", ["no room"], "g.npz",
                  basis={"Hf": [0, 0, 1, 2], "O": [0, 1]}, slots="1s1p1d")
    _expect_fault("hamgnn", tmp_path / "g.npz", tmp_path / "out", ["unknown basis set"], "g.npz", basis="nope")


def test_bad_schnorb_wrong_key_and_truncated(tmp_path):
    basis = get_basis("def2-svp")
    st = Structure([8, 1, 1], [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]], np.zeros((3, 3)), False)
    write_schnorb(tmp_path / "w.db", [toy_record(st, basis, 10.0)])
    _expect_fault("schnorb", tmp_path / "w.db", tmp_path / "out", ["no data['fock']"], "w.db", hamiltonian_key="fock")
    raw = (tmp_path / "w.db").read_bytes()
    (tmp_path / "t.db").write_bytes(raw[:1000])
    _expect_fault("schnorb", tmp_path / "t.db", tmp_path / "out", ["truncated", "not a readable"], "t.db")


def test_unknown_format_and_option(tmp_path):
    with pytest.raises(ConfigError):
        import_dataset("vasp", tmp_path, tmp_path / "out", name="x")
    with pytest.raises(ConfigError, match="no option"):
        import_dataset("deeptb", tmp_path, tmp_path / "out", name="x", colour="red")


def test_existing_destination_is_kept(tmp_path, one_rec):
    write_deeph(tmp_path / "src", one_rec)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="exists"):
        import_dataset("deeph", tmp_path / "src", tmp_path / "out", name="x")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# -- export round trip -------------------------------------------------------------------------

def _records_equal(a: Record, b: Record) -> None:
    assert a.name == b.name
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    np.testing.assert_allclose(a.cell, b.cell, atol=1e-12)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    np.testing.assert_array_equal(a.edge_index, b.edge_index)
    np.testing.assert_array_equal(a.edge_shift, b.edge_shift)
    for x, y in ((a.h_onsite, b.h_onsite), (a.h_offsite, b.h_offsite), (a.s_onsite, b.s_onsite),
                 (a.s_offsite, b.s_offsite)):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
    assert a.n_electrons == b.n_electrons and a.spinful == b.spinful


@pytest.mark.parametrize("spinful", [False, True])
def test_deeph_export_round_trip(tmp_path, spinful):
    recs = [toy_record(box_structure(seed=s), HFO, 4.0, name=f"s{s}") for s in range(3)]
    if spinful:  # complex [[uu, ud], [du, dd]] blocks with a spin-diagonal overlap
        def spin(flat_blocks, norb_rows, norb_cols, soc):
            out, o = [], 0
            for r, c in zip(norb_rows, norb_cols):
                b = flat_blocks[o:o + r * c].reshape(r, c)
                o += r * c
                big = np.kron(np.eye(2), b).astype(np.complex128)
                if soc:
                    big[:r, c:] += 0.01j * b
                    big[r:, :c] += 0.01j * b
                out.append(big.reshape(-1))
            return np.concatenate(out)

        for r in recs:
            n = r.basis.norb_per_atom(r.numbers)
            ni, nj = n[r.edge_index[:, 0]], n[r.edge_index[:, 1]]
            r.h_onsite, r.h_offsite = spin(r.h_onsite, n, n, True), spin(r.h_offsite, ni, nj, True)
            r.s_onsite, r.s_offsite = spin(r.s_onsite, n, n, False), spin(r.s_offsite, ni, nj, False)
            r.spinful = True
    with DatasetWriter(tmp_path / "ds", "toy", HFO, 4.0, {"code": "synthetic"}) as w:
        for r in recs:
            w.add(r)
        ds = w.finalize({"train": ["s0"], "val": ["s1"], "test": ["s2"]})
    export_dataset(ds, "deeph", tmp_path / "dh")
    info = json.loads((tmp_path / "dh" / "s0" / "info.json").read_text())
    assert info["isspinful"] is spinful
    with h5py.File(tmp_path / "dh" / "s0" / "hamiltonians.h5") as f:  # eV, 1-based keys
        on = f["[0, 0, 0, 1, 1]"][()]
    assert abs(on).max() > 1.0 and on.dtype == (np.complex128 if spinful else np.float64)
    back = import_dataset("deeph", tmp_path / "dh", tmp_path / "back", name="toy",
                          splits={"train": ["s0"], "val": ["s1"], "test": ["s2"]})
    assert back.card.spinful is spinful and back.card.image_convention == ds.card.image_convention
    assert back.card.basis.to_json()["shells"] == ds.card.basis.to_json()["shells"]
    for name in ds.names:
        _records_equal(ds.read(name), back.read(name))


def test_cli_import_export(tmp_path, one_rec, capsys):
    from zoo.cli.main import main

    write_deeptb(tmp_path / "src", one_rec, {"Hf": "2s1p1d", "O": "1s1p"})
    assert main(["data", "import", "deeptb", str(tmp_path / "src"), str(tmp_path / "ds"), "--name", "t"]) == 0
    assert "imported 1 structure" in capsys.readouterr().out
    assert main(["data", "export", "deeph", str(tmp_path / "ds"), str(tmp_path / "dh")]) == 0
    assert (tmp_path / "dh" / "src_0000" / "hamiltonians.h5").is_file()
    assert main(["data", "import", "cp2k", str(tmp_path / "src"), str(tmp_path / "x"), "--name", "t"]) == 1
    assert "H.csr" in capsys.readouterr().err


def test_schnorb_bohr_positions(tmp_path):
    """length_unit='bohr' converts positions to Angstrom (blocks untouched)."""
    basis = get_basis("def2-svp")
    st = Structure([8, 1, 1], [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]], np.zeros((3, 3)), False)
    rec = toy_record(st, basis, 10.0)
    in_bohr = Record(rec.name, Structure(st.numbers, st.positions / BOHR_ANG, st.cell, st.pbc), basis, rec.edge_index,
                     rec.edge_shift, rec.h_onsite, rec.h_offsite, rec.s_onsite, rec.s_offsite)
    write_schnorb(tmp_path / "w.db", [in_bohr])
    ds = import_dataset("schnorb", tmp_path / "w.db", tmp_path / "out", name="w", length_unit="bohr")
    got = ds.read(ds.names[0])
    np.testing.assert_allclose(got.positions, st.positions, atol=1e-12)
    check_import(got, got, rec, np.eye(3))
    assert ds.card.provenance["source_units"]["length"] == "bohr"
