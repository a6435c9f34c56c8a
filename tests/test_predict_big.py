"""`zoo predict` at any size: blocks streamed to disk partition by partition, exact hermitization
with a bounded partner buffer, npz / h5 / deeph output, many structures per call, --eig, bad input
(one sentence naming the file, non-zero exit, nothing written); `zoo data structure`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_hfo2
from zoo.bench.predict import predict_files, stream_blocks, StreamStats
from zoo.bench.run import dataset_info_json
from zoo.cli.main import main
from zoo.data.format import Structure, read_record
from zoo.data.structure_io import read_structure
from zoo.data.torch_data import DatasetInfo, structure_to_data
from zoo.models import build_model, symmetrize_prediction
from zoo.models.contract import reverse_edges
from zoo.physics.assembly import assemble, unpad_blocks
from zoo.physics.basis import OrbitalLayout, get_basis

LAYOUT = OrbitalLayout(get_basis("szv-molopt-sr"), [8, 72])
ESCN = {"num_layers": 2, "sphere_channels": 4, "ffn_hidden_channels": 8, "edge_channels": 8}
CUTOFF = 3.5


def _checkpoint(path: Path, name: str = "escn", hp: dict | None = None, has_overlap: bool = False):
    """A checkpoint as `zoo bench` writes it (meta, weights, train_config), of a model with random,
    non-hermitian output, so hermitization across partition cuts is really exercised."""
    hp = dict(ESCN if hp is None else hp)
    torch.manual_seed(0)
    info = DatasetInfo(LAYOUT, CUTOFF, has_overlap=has_overlap, name="toy")
    model = build_model(name, info, **hp).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch.save({"meta": {"model": name, "hparams": hp, "info": dataset_info_json(info)}, "model": model.state_dict(),
                "train_config": {"dtype": "float64"}}, path)
    return model


def _reference(model, st: Structure):
    """The hermitized full-graph prediction as ragged flat arrays (on-site, off-site), and the graph."""
    data = structure_to_data(st, LAYOUT, CUTOFF, torch.float64)
    with torch.no_grad():
        p = symmetrize_prediction(model(data), data)
    z, ei = st.numbers, data.edge_index.numpy()
    on = unpad_blocks(p.node_blocks.numpy(), LAYOUT.index, z, z)
    off = unpad_blocks(p.edge_blocks.numpy(), LAYOUT.index, z[ei[0]], z[ei[1]])
    return on, off, data


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("pb")
    model = _checkpoint(d / "ckpt.pt")
    tiny_hfo2(3, reps=(3, 1, 1)).write(d / "s.extxyz", format="extxyz")  # 36 atoms
    return d, model


def test_streamed_files_equal_hermitized_full_graph(setup, tmp_path):
    """h5 and npz written partition by partition (3 partitions) hold the hermitized one-pass H
    exactly, in the full graph's edge order; the h5 is a zoo structure file."""
    d, model = setup
    st = read_structure(d / "s.extxyz")
    on, off, data = _reference(model, st)
    (r5,) = predict_files(d / "ckpt.pt", [d / "s.extxyz"], tmp_path / "H.h5", max_atoms_per_part=12)
    (rz,) = predict_files(d / "ckpt.pt", [d / "s.extxyz"], tmp_path / "H.npz", max_atoms_per_part=12)
    assert r5.n_parts == 3 and rz.n_parts == 3
    rec = read_record(tmp_path / "H.h5")
    np.testing.assert_array_equal(rec.edge_index, data.edge_index.numpy().T)
    np.testing.assert_allclose(rec.h_onsite, on, atol=1e-12, rtol=0)
    np.testing.assert_allclose(rec.h_offsite, off, atol=1e-12, rtol=0)
    h = np.load(tmp_path / "H.npz")
    assert bool(h["hermitized"]) and str(h["units"]) == "hartree"
    np.testing.assert_array_equal(h["h_offsite"], rec.h_offsite)
    np.testing.assert_array_equal(h["h_onsite"], rec.h_onsite)
    np.testing.assert_array_equal(h["norb"], rec.norb)
    # the assembled H(k) is hermitian at a general k (pairs across the cuts included)
    m = assemble(h["norb"], h["h_onsite"], h["edge_index"], h["edge_shift"], h["h_offsite"], k=[0.1, 0.2, -0.3])
    m = m.toarray()
    assert np.abs(m).max() > 1e-3
    np.testing.assert_allclose(m, m.conj().T, atol=1e-13)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_partner_buffer_holds_only_edges_across_cuts(setup):
    """The buffer of edges waiting for their partner never exceeds the edges whose partner is
    labelled by another partition (the cut), far fewer than all edges."""
    from zoo.data.partition import partition

    d, model = setup
    st = Structure.from_ase(tiny_hfo2(4, reps=(6, 1, 1)))  # 72 atoms, 6 partitions
    data = structure_to_data(st, LAYOUT, CUTOFF, torch.float64)
    stats = StreamStats()
    seen = torch.zeros(data.edge_index.shape[1], dtype=torch.long)
    for kind, ids, _ in stream_blocks(model, data.clone(), 12, True, False, stats):
        if kind == "edge":
            seen.index_add_(0, ids, torch.ones_like(ids))
    assert (seen == 1).all()  # every edge exactly once
    parts = partition(data, "rcb", n_parts=6, hops=int(model.message_passing_layers), virtual="one-way",
                      flow=model.message_flow, allow_self_images=True)
    owner = torch.full((data.edge_index.shape[1],), -1)
    for k, p in enumerate(parts):
        owner[p.orig_edge[p.edge_label_mask]] = k
    rev = reverse_edges(data.edge_index, data.edge_shift, data.num_nodes)
    cut = int((owner != owner[rev]).sum())
    assert stats.n_parts == 6
    assert 0 < stats.max_pending_edges <= cut // 2 + 1  # one half of each cut pair waits, at most
    assert stats.max_pending_edges < data.edge_index.shape[1] / 4


def test_deeph_output_reads_back(setup, tmp_path):
    """--format deeph: DeepH's processed folder, which the DeepH importer reads back as the same H."""
    from zoo.data.importers import deeph

    d, _ = setup
    assert main(["predict", str(d / "ckpt.pt"), str(d / "s.extxyz"), "-o", str(tmp_path / "H.h5"),
                 "--max-atoms-per-part", "12", "--quiet"]) == 0
    assert main(["predict", str(d / "ckpt.pt"), str(d / "s.extxyz"), "-o", str(tmp_path / "dh"), "--format", "deeph",
                 "--max-atoms-per-part", "12", "--quiet"]) == 0
    assert (tmp_path / "dh" / "s" / "hamiltonians.h5").is_file()
    _, _, records = deeph.read(tmp_path / "dh")
    (back,) = list(records())
    ref = read_record(tmp_path / "H.h5")
    k = [0.25, 0.0, 0.1]
    a = assemble(ref.norb, ref.h_onsite, ref.edge_index, ref.edge_shift, ref.h_offsite, k=k).toarray()
    b = assemble(back.norb, back.h_onsite, back.edge_index, back.edge_shift, back.h_offsite, k=k).toarray()
    np.testing.assert_allclose(b, a, atol=1e-10)


def test_many_structures_and_trajectory_frames_in_one_call(setup, tmp_path):
    """Two files, one a 3-frame trajectory: four outputs in the folder, each equal to its own prediction."""
    import ase.io

    d, model = setup
    frames = [tiny_hfo2(10 + k) for k in range(3)]
    ase.io.write(tmp_path / "traj.extxyz", frames, format="extxyz")
    tiny_hfo2(20).write(tmp_path / "one.extxyz", format="extxyz")
    out = tmp_path / "out"
    res = predict_files(d / "ckpt.pt", [tmp_path / "traj.extxyz", tmp_path / "one.extxyz"], out)
    assert sorted(p.name for p in out.iterdir()) == ["one.npz", "traj-0000.npz", "traj-0001.npz", "traj-0002.npz"]
    assert len(res) == 4
    for k in range(3):
        st = read_structure(tmp_path / "traj.extxyz", index=k)
        on, off, _ = _reference(model, st)
        h = np.load(out / f"traj-{k:04d}.npz")
        np.testing.assert_allclose(h["h_onsite"], on, atol=1e-12)
        np.testing.assert_allclose(h["h_offsite"], off, atol=1e-12)
        np.testing.assert_allclose(h["positions"], st.positions)


def test_eig_orthogonal_writes_spectrum_gap_and_plot(setup, tmp_path):
    """--eig on an orthogonal-basis checkpoint: the eigenvalues are those of the written H, gap and
    E_F follow from --electrons, and a DOS plot is written."""
    d, _ = setup
    assert main(["predict", str(d / "ckpt.pt"), str(d / "s.extxyz"), "-o", str(tmp_path / "H.npz"), "--eig",
                 "--electrons", "96", "--quiet"]) == 0
    h = np.load(tmp_path / "H.npz")
    m = assemble(h["norb"], h["h_onsite"], h["edge_index"], h["edge_shift"], h["h_offsite"]).toarray()
    ref = np.linalg.eigvalsh(0.5 * (m + m.T))
    e = np.load(tmp_path / "H.eig.npz")
    np.testing.assert_allclose(e["eigenvalues"], ref, atol=1e-10)
    assert e["gap"] == pytest.approx(ref[48] - ref[47], abs=1e-10)  # 96 electrons: 48 doubly occupied states
    assert e["fermi_level"] == pytest.approx(0.5 * (ref[48] + ref[47]), abs=1e-10)
    # DOS integrates to 2 states per eigenvalue in the window (Gaussian broadening, window +- 5 sigma)
    assert np.trapezoid(e["dos"], e["dos_energy"]) == pytest.approx(2 * ref.size, rel=1e-3)
    assert (tmp_path / "H.dos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # above the dense limit: the states nearest --eig-sigma by shift-invert, the same values
    from zoo.physics.units import HARTREE_EV

    sigma = float(0.5 * (ref[48] + ref[47]))
    (r,) = predict_files(d / "ckpt.pt", [d / "s.extxyz"], tmp_path / "big.h5", eig=True, dense_limit=50,
                         eig_count=10, eig_sigma_ev=sigma * HARTREE_EV)
    assert r.eig["method"].startswith("shift-invert") and "gap" not in r.eig
    near = np.sort(ref[np.argsort(np.abs(ref - sigma))[:10]])
    np.testing.assert_allclose(np.load(tmp_path / "big.eig.npz")["eigenvalues"], near, atol=1e-8)


def _overlap_file(path: Path, st: Structure, scale: float) -> None:
    """A zoo structure file of `st` whose S is I + scale * (a short-range positive coupling)."""
    from zoo.data.format import Record, write_record
    from zoo.data.graph import neighbor_graph

    basis = LAYOUT.basis
    norb = basis.norb_per_atom(st.numbers)
    ei, sh = neighbor_graph(st.numbers, st.positions, st.cell, st.pbc, CUTOFF)
    on = np.concatenate([np.eye(n).ravel() for n in norb])
    off = np.concatenate([np.full(norb[i] * norb[j], scale) for i, j in ei])
    write_record(path, Record("s", st, basis, ei, sh, on, np.zeros_like(off), on, off, n_electrons=96.0))


def test_eig_with_overlap_and_its_faults(tmp_path):
    """A non-orthogonal checkpoint: --eig without --overlap is refused before anything is written; an
    indefinite S is refused naming its file; a good S gives the generalized eigenvalues of (H, S)."""
    import scipy.linalg as sla

    _checkpoint(tmp_path / "ckpt.pt", "sk", {}, has_overlap=True)
    tiny_hfo2(3, reps=(3, 1, 1)).write(tmp_path / "s.extxyz", format="extxyz")
    st = read_structure(tmp_path / "s.extxyz")
    args = ["predict", str(tmp_path / "ckpt.pt"), str(tmp_path / "s.extxyz"), "-o", str(tmp_path / "H.npz"), "--eig",
            "--quiet"]
    assert main(args) == 1
    assert not (tmp_path / "H.npz").exists()
    _overlap_file(tmp_path / "bad.h5", st, 0.5)  # uniform coupling 0.5 to ~dozens of neighbours: indefinite
    with pytest.raises(Exception, match=r"bad\.h5.*not positive definite"):
        predict_files(tmp_path / "ckpt.pt", [tmp_path / "s.extxyz"], tmp_path / "H.npz", eig=True,
                      overlap=tmp_path / "bad.h5")
    assert not (tmp_path / "H.npz").exists()
    _overlap_file(tmp_path / "good.h5", st, 0.002)
    assert main(args + ["--overlap", str(tmp_path / "good.h5")]) == 0
    h = np.load(tmp_path / "H.npz")
    hm = assemble(h["norb"], h["h_onsite"], h["edge_index"], h["edge_shift"], h["h_offsite"]).toarray()
    s = read_record(tmp_path / "good.h5")
    sm = assemble(s.norb, s.s_onsite, s.edge_index, s.edge_shift, s.s_offsite).toarray()
    ref = sla.eigh(0.5 * (hm + hm.T), 0.5 * (sm + sm.T), eigvals_only=True)
    assert np.abs(ref - np.linalg.eigvalsh(0.5 * (hm + hm.T))).max() > 1e-5  # S matters
    e = np.load(tmp_path / "H.eig.npz")
    np.testing.assert_allclose(e["eigenvalues"], ref, atol=1e-10)
    assert e["gap"] == pytest.approx(ref[48] - ref[47], abs=1e-10)  # n_electrons from the overlap file


# -- bad input: one sentence naming the file, exit 1, nothing written ------------------------------

def _fails(capsys, args, out: Path, *needles: str) -> str:
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error:") and err.count("\n") == 0, err
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists() and not [p for p in out.parent.glob(f".{out.name}*")]
    return err


def test_bad_inputs_fail_cleanly(setup, tmp_path, capsys):
    from ase import Atoms

    d, _ = setup
    out = tmp_path / "H.npz"
    ck = str(d / "ckpt.pt")
    # an element the checkpoint's basis lacks
    at = tiny_hfo2(0)
    at.numbers[0] = 14
    at.write(tmp_path / "si.extxyz", format="extxyz")
    _fails(capsys, ["predict", ck, str(tmp_path / "si.extxyz"), "-o", str(out)], out, "si.extxyz", "Si", "basis")
    # a cell narrower than the cutoff
    Atoms("HfO2", positions=[[0, 0, 0], [1.0, 1.0, 0.5], [2.0, 0.5, 1.5]], cell=[3.0, 6, 6], pbc=True).write(
        tmp_path / "thin.extxyz", format="extxyz")
    _fails(capsys, ["predict", ck, str(tmp_path / "thin.extxyz"), "-o", str(out)], out, "thin.extxyz",
           "cell too small", "--repeat")
    # an unreadable structure file
    (tmp_path / "junk.cif").write_text("data_x\n_cell_length_a oops\nloop_\n")
    _fails(capsys, ["predict", ck, str(tmp_path / "junk.cif"), "-o", str(out)], out, "junk.cif")
    # a good file first, then a bad one: nothing is written for either (inputs are checked first)
    _fails(capsys, ["predict", ck, str(d / "s.extxyz"), str(tmp_path / "si.extxyz"), "-o", str(tmp_path / "many")],
           tmp_path / "many", "si.extxyz")
    # a checkpoint of another model version: a parameter renamed, and one resized
    ck_obj = torch.load(d / "ckpt.pt", weights_only=False)
    key = next(iter(ck_obj["model"]))
    renamed = dict(ck_obj, model={("old_" + k if k == key else k): v for k, v in ck_obj["model"].items()})
    torch.save(renamed, tmp_path / "old.pt")
    _fails(capsys, ["predict", str(tmp_path / "old.pt"), str(d / "s.extxyz"), "-o", str(out)], out, "old.pt",
           "another version")
    resized = dict(ck_obj, meta=dict(ck_obj["meta"], hparams=dict(ck_obj["meta"]["hparams"], sphere_channels=6)))
    torch.save(resized, tmp_path / "resized.pt")
    _fails(capsys, ["predict", str(tmp_path / "resized.pt"), str(d / "s.extxyz"), "-o", str(out)], out,
           "resized.pt", "another version")
    (tmp_path / "trunc.pt").write_bytes((d / "ckpt.pt").read_bytes()[:200])
    _fails(capsys, ["predict", str(tmp_path / "trunc.pt"), str(d / "s.extxyz"), "-o", str(out)], out, "trunc.pt")


# -- zoo data structure ----------------------------------------------------------------------------

def test_data_structure_catalogue_and_repeat(tmp_path, capsys):
    """A catalogue cell is the recipe's own (same as the build's test structure), written without
    labels; --repeat replicates any file; a bad --repeat is refused."""
    from zoo.data.catalogue import CATALOGUE
    from zoo.data.catalogue.recipes import c_hfo2_cell

    assert main(["data", "structure", "c-hfo2", "-o", str(tmp_path / "c.extxyz")]) == 0
    st = read_structure(tmp_path / "c.extxyz")
    p = CATALOGUE["c-hfo2"].sizes["small"].params
    ref = c_hfo2_cell(p["repeat"], CATALOGUE["c-hfo2"].seed + 200, p["rattle"], -0.01)  # test-0: split 2, m 0
    np.testing.assert_allclose(st.positions, ref.positions, atol=1e-8)
    np.testing.assert_array_equal(st.numbers, ref.numbers)
    assert main(["data", "structure", str(tmp_path / "c.extxyz"), "--repeat", "2,1,3", "-o",
                 str(tmp_path / "big.cif")]) == 0
    big = read_structure(tmp_path / "big.cif")
    assert big.n_atoms == 6 * st.n_atoms
    np.testing.assert_allclose(big.cell, st.cell * np.array([2, 1, 3])[:, None], atol=1e-6)
    capsys.readouterr()
    assert main(["data", "structure", str(tmp_path / "c.extxyz"), "--repeat", "2,0,1", "-o",
                 str(tmp_path / "no.xyz")]) == 1
    assert "--repeat" in capsys.readouterr().err and not (tmp_path / "no.xyz").exists()


def test_example_03_runs(tmp_path, monkeypatch, capsys):
    """examples/03_predict_big_structure.py at its small test size: structure -> H -> DOS plot."""
    import runpy
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / "03_predict_big_structure.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [script.name, "--out", str(tmp_path / "ex")])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "gap" in out
    assert (tmp_path / "ex" / "H.dos.png").is_file()


def test_device_check_script_is_valid_bash():
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.sh"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "cuda" in script.read_text()
