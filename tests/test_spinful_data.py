"""Spinful data end to end: the synthetic SOC Hamiltonian, the padded spinful layout, torch data,
HDF5 and DeepH round trips (docs/adr/0006)."""

import numpy as np
import pytest
import torch

from tests.conftest import tiny_hfo2
from zoo.data.export import export_records
from zoo.data.format import Dataset, DatasetWriter, Record, Structure
from zoo.data.importers import deeph
from zoo.data.synthetic import toy_record, toy_spinful_record
from zoo.data.torch_data import DatasetInfo, block_masks, collate, record_to_data
from zoo.errors import DataError
from zoo.physics.assembly import assemble, pad_blocks, unpad_blocks
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.spin import rotate_spinful, spinful_wigner, time_reverse
from zoo.physics.wigner import random_rotation

BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [8, 72])
CUTOFF = 4.0


def _structure(seed=0, reps=(1, 1, 1)) -> Structure:
    return Structure.from_ase(tiny_hfo2(seed, reps))


@pytest.fixture(scope="module")
def rec() -> Record:
    return toy_spinful_record(_structure(), BASIS, CUTOFF)


def _keys(r: Record):
    return {(int(i), int(j), *map(int, s)): e for e, ((i, j), s) in enumerate(zip(r.edge_index, r.edge_shift))}


def _rotated(st: Structure, R: np.ndarray) -> Structure:
    return Structure(st.numbers, st.positions @ R.T, st.cell @ R.T, st.pbc)


# -- the synthetic spinful Hamiltonian -------------------------------------------------------------

def test_toy_spinful_blocks_are_complex_with_soc_on_and_off_site(rec):
    assert rec.spinful and rec.h_onsite.dtype == np.complex128 and rec.s_onsite.dtype == np.complex128
    on, off = rec.onsite_blocks(), rec.edge_blocks()
    for blocks in (on, off):
        ud = max(np.abs(b[: b.shape[0] // 2, b.shape[1] // 2:]).max() for b in blocks)
        assert ud > 1e-3  # spin-flip (SOC) quadrants are populated
    assert max(np.abs(b.imag).max() for b in off) > 1e-3
    # switching SOC off leaves I2 (x) H0: the spinless toy record, exactly
    bare = toy_spinful_record(_structure(), BASIS, CUTOFF, soc_onsite=0.0, soc_offsite=0.0)
    h0 = toy_record(_structure(), BASIS, CUTOFF)
    for b, b0 in zip(bare.edge_blocks(), h0.edge_blocks()):
        np.testing.assert_array_equal(b, np.kron(np.eye(2), b0))


@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoinversion"])
def test_toy_spinful_is_su2_equivariant(rec, improper):
    R = random_rotation(11, improper=improper).numpy()
    rot = toy_spinful_record(_rotated(rec.structure, R), BASIS, CUTOFF)
    shells = {int(z): BASIS.element_shells(z) for z in set(rec.numbers.tolist())}
    z = rec.numbers
    err = max(np.abs(rotate_spinful(b, shells[int(z[a])], shells[int(z[a])], R) - br).max()
              for a, (b, br) in enumerate(zip(rec.onsite_blocks(), rot.onsite_blocks())))
    keys_r = _keys(rot)
    assert set(keys_r) == set(_keys(rec))
    rot_off = rot.edge_blocks()
    for e, (b, (i, j)) in enumerate(zip(rec.edge_blocks(), rec.edge_index)):
        k = (int(i), int(j), *map(int, rec.edge_shift[e]))
        br = rot_off[keys_r[k]]
        err = max(err, np.abs(rotate_spinful(b, shells[int(z[i])], shells[int(z[j])], R) - br).max())
    assert err < 1e-12, err
    # the check can fail: rotating the spin part with the wrong sense does not match
    b, br = rec.edge_blocks()[0], rot_off[keys_r[(int(rec.edge_index[0, 0]), int(rec.edge_index[0, 1]),
                                                   *map(int, rec.edge_shift[0]))]]
    si, sj = shells[int(z[rec.edge_index[0, 0]])], shells[int(z[rec.edge_index[0, 1]])]
    assert np.abs(rotate_spinful(b, si, sj, R.T) - br).max() > 1e-4


def test_toy_spinful_time_reversal_hermiticity_and_kramers(rec):
    for b in rec.onsite_blocks() + rec.edge_blocks():
        assert np.abs(time_reverse(b) - b).max() < 1e-15
    for k in (None, [0.2, -0.1, 0.35]):
        h = rec.matrix("H", k).toarray()
        assert np.abs(h - h.conj().T).max() < 1e-14
    # Kramers: with time reversal and S = kron(I2, S0) every Gamma level is doubly degenerate ...
    e = rec.eigvalsh()
    assert np.abs(e[0::2] - e[1::2]).max() < 1e-10
    # ... and SOC splits levels that the spinless spectrum holds (it is not I2 (x) H0 in disguise)
    e0 = toy_record(rec.structure, BASIS, CUTOFF).eigvalsh()
    assert np.abs(e[0::2] - e0).max() > 1e-3


# -- padding ------------------------------------------------------------------------------------------

def test_padded_round_trip_and_layout(rec):
    pn, pe = rec.padded(LAYOUT)
    n = LAYOUT.n_max
    assert pn.shape == (rec.n_atoms, 2 * n, 2 * n) and pe.shape == (rec.n_edges, 2 * n, 2 * n)
    assert pn.dtype == np.complex128
    z, ei = rec.numbers, rec.edge_index
    np.testing.assert_array_equal(unpad_blocks(pn, LAYOUT.index, z, z, spinful=True), rec.h_onsite)
    np.testing.assert_array_equal(unpad_blocks(pe, LAYOUT.index, z[ei[:, 0]], z[ei[:, 1]], spinful=True), rec.h_offsite)
    # each spin quadrant is the spinless padding of that quadrant
    for s in range(2):
        for t in range(2):
            quad = np.concatenate([b[s * (b.shape[0] // 2):(s + 1) * (b.shape[0] // 2),
                                     t * (b.shape[1] // 2):(t + 1) * (b.shape[1] // 2)].reshape(-1)
                                   for b in rec.edge_blocks()])
            np.testing.assert_array_equal(pe[:, s * n:(s + 1) * n, t * n:(t + 1) * n],
                                          pad_blocks(quad, LAYOUT.index, z[ei[:, 0]], z[ei[:, 1]], n))


def test_padded_blocks_rotate_with_one_layout_matrix(rec):
    """kron(U, D_layout) rotates every padded spinful block, whatever its elements (the ADR's claim)."""
    R = random_rotation(4, improper=True).numpy()
    rot = toy_spinful_record(_rotated(rec.structure, R), BASIS, CUTOFF)
    D = spinful_wigner(LAYOUT.slot_ls, R).numpy()
    pn, _ = rec.padded(LAYOUT)
    pnr, _ = rot.padded(LAYOUT)
    assert np.abs(D @ pn @ D.conj().T - pnr).max() < 1e-12


# -- torch data ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,cdtype", [(torch.float32, torch.complex64), (torch.float64, torch.complex128)])
def test_record_to_data_spinful(rec, dtype, cdtype):
    d = record_to_data(rec, LAYOUT, dtype=dtype)
    n = LAYOUT.n_max
    assert d.y_node.dtype == cdtype and d.y_edge.dtype == cdtype and d.pos.dtype == dtype
    assert d.y_node.shape == (rec.n_atoms, 2 * n, 2 * n)
    assert d.node_orb_mask.shape == (rec.n_atoms, 2 * n)
    torch.testing.assert_close(d.node_orb_mask[:, n:], d.node_orb_mask[:, :n], rtol=0, atol=0)
    nm, em = block_masks(d)
    assert nm.shape == d.y_node.shape and em.shape == d.y_edge.shape
    assert int(nm.sum()) == int((rec.norb ** 2).sum())  # every real spinful entry, nothing else
    assert (d.y_node[~nm] == 0).all() and (d.y_edge[~em] == 0).all()
    # the overlap stays spinless and real: the spinless record's padded S
    sn, se = toy_record(rec.structure, BASIS, CUTOFF).padded(LAYOUT, "S")
    assert d.s_node.dtype == dtype and d.s_node.shape == (rec.n_atoms, n, n)
    torch.testing.assert_close(d.s_edge, torch.as_tensor(se, dtype=dtype))
    b = collate([d, d])
    assert b.y_edge.dtype == cdtype and block_masks(b)[1].shape == b.y_edge.shape


def test_spinful_overlap_must_be_spin_diagonal(rec):
    bad = toy_spinful_record(rec.structure, BASIS, CUTOFF)
    bad.s_offsite = bad.h_offsite.copy()  # not kron(I2, S)
    with pytest.raises(DataError, match="not kron"):
        record_to_data(bad, LAYOUT)


# -- files -------------------------------------------------------------------------------------------

def test_hdf5_round_trip(tmp_path, rec):
    with DatasetWriter(tmp_path / "soc", "toy-soc", BASIS, CUTOFF, {"code": "synthetic", "method": "toy soc"}) as w:
        for k in range(3):
            w.add(toy_spinful_record(_structure(k), BASIS, CUTOFF, name=f"s{k}"))
        w.finalize({"train": ["s0"], "val": ["s1"], "test": ["s2"]})
    ds = Dataset.open(tmp_path / "soc")
    assert ds.card.spinful
    back = ds.read("s0")
    assert back.spinful
    np.testing.assert_array_equal(back.h_onsite, rec.h_onsite)
    np.testing.assert_array_equal(back.h_offsite, rec.h_offsite)
    np.testing.assert_array_equal(back.s_offsite, rec.s_offsite)


def test_deeph_export_import_round_trip(tmp_path, rec):
    export_records([rec], "deeph", tmp_path / "deeph")
    _, basis, records = deeph.read(tmp_path / "deeph")
    (back,) = list(records())
    assert back.spinful and basis.shells == BASIS.shells
    keys = _keys(back)
    assert set(keys) == set(_keys(rec))
    np.testing.assert_allclose(back.h_onsite, rec.h_onsite, atol=1e-13, rtol=1e-12)
    order = [keys[k] for k in _keys(rec)]
    off_back = back.edge_blocks()
    for e, b in enumerate(rec.edge_blocks()):
        np.testing.assert_allclose(off_back[order[e]], b, atol=1e-13, rtol=1e-12)
    s_back = back.edge_blocks("S")
    for e, b in enumerate(rec.edge_blocks("S")):
        np.testing.assert_allclose(s_back[order[e]], b, atol=1e-14)
    # the DeepH file holds the spin-major [[uu, ud], [du, dd]] blocks in OpenMX order: the first
    # spin quadrant of an on-site block is the (permuted) up-up block, in eV
    import h5py
    import json

    from zoo.physics.conventions import orbital_permutation
    from zoo.physics.units import HARTREE_EV

    z0 = int(rec.numbers[0])
    p, s = orbital_permutation(BASIS.element_shells(z0), "openmx")
    with h5py.File(tmp_path / "deeph" / rec.name / "hamiltonians.h5") as f:
        raw = f[json.dumps([0, 0, 0, 1, 1])][()]
    n = p.size
    uu = rec.onsite_blocks()[0][:n, :n]
    ud = rec.onsite_blocks()[0][:n, n:]
    np.testing.assert_allclose(raw[np.ix_(p, p)] / HARTREE_EV, s[:, None] * uu * s[None, :], atol=1e-13)
    np.testing.assert_allclose(raw[np.ix_(p, p + n)] / HARTREE_EV, s[:, None] * ud * s[None, :], atol=1e-13)


# -- harness: losses, metrics, evaluate --------------------------------------------------------------

def _write(path, spinful: bool, soc: float = 1.0):
    name = "toy-soc" if spinful else "toy"
    with DatasetWriter(path, name, BASIS, CUTOFF, {"code": "synthetic", "method": name}) as w:
        for k in range(3):
            st = _structure(k)
            w.add(toy_spinful_record(st, BASIS, CUTOFF, name=f"s{k}", soc_onsite=0.05 * soc, soc_offsite=0.5 * soc)
                  if spinful else toy_record(st, BASIS, CUTOFF, name=f"s{k}"))
        w.finalize({"train": ["s0"], "val": ["s1"], "test": ["s2"]})
    return Dataset.open(path)


class _Scaled(torch.nn.Module):
    """A stand-in model: the reference blocks times a constant (hermitian, not equivariant)."""

    def __init__(self, spinful: bool, factor: float = 1.1):
        super().__init__()
        self.spinful, self.factor = spinful, factor

    def forward(self, batch):
        from zoo.models.contract import Prediction

        return Prediction(batch.y_node * self.factor, batch.y_edge * self.factor)


def test_masked_loss_on_complex_targets(rec):
    from zoo.bench.losses import LossSpec, masked_sums
    from zoo.models.contract import Prediction

    d = record_to_data(rec, LAYOUT, dtype=torch.float64)
    nm, em = block_masks(d)
    err = torch.complex(torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64))
    pn = (d.y_node + err * nm).clone()
    pe = (d.y_edge + err * em).clone()
    pn[~nm] = 7.0 + 3.0j  # padding is ignored
    pn.requires_grad_(True)
    total, count = masked_sums(LossSpec("mse"), Prediction(pn, pe), d)
    assert not total.is_complex()
    assert abs(float(total.detach() / count) - 0.25) < 1e-12  # |0.3 - 0.4i|^2
    assert int(count) == int(nm.sum() + em.sum())
    total.backward()
    # d|e|^2 / d conj(e) convention of torch: gradient 2 e on labelled entries, zero on padding
    assert torch.allclose(pn.grad[nm], 2 * err.expand(int(nm.sum())), atol=1e-12)
    assert (pn.grad[~nm] == 0).all()
    focal, _ = masked_sums(LossSpec("focal"), Prediction(pn, pe), d)
    assert torch.isfinite(focal) and 0 < float(focal.detach() / count) < 0.25


def test_block_errors_report_modulus_real_and_imaginary_mae():
    from zoo.bench.metrics import BlockErrors

    n = LAYOUT.n_max
    ref = np.zeros((2, 2 * n, 2 * n), dtype=np.complex128)
    mask = np.zeros((2, 2 * n, 2 * n), dtype=bool)
    mask[:, :4, :4] = True
    pred = ref + (3e-3 + 4e-3j) * mask + 9.0 * ~mask  # 3 + 4i mE_h on labelled entries, junk in padding
    acc = BlockErrors(LAYOUT)
    acc.add_nodes(pred, ref, mask)
    acc.add_edges(pred, ref, mask, np.array([8, 8]), np.array([72, 72]))
    out = acc.summary()
    assert abs(out["node_mae_meh"] - 5.0) < 1e-9 and abs(out["total_mae_meh"] - 5.0) < 1e-9
    from zoo.physics.units import MEV_PER_HARTREE

    for name in ("node", "edge", "total"):
        assert abs(out[f"{name}_mae_re_mev"] - 3e-3 * MEV_PER_HARTREE) < 1e-9
        assert abs(out[f"{name}_mae_im_mev"] - 4e-3 * MEV_PER_HARTREE) < 1e-9
    spinless = BlockErrors(LAYOUT)
    spinless.add_nodes(np.ones((1, n, n)), np.zeros((1, n, n)), np.ones((1, n, n), bool))
    assert not any("_re_" in k or "_im_" in k for k in spinless.summary())


def test_evaluate_spinful_spectrum_counts_one_electron_per_state(tmp_path):
    """Without SOC a spinful H is I2 (x) H0: its spectrum is H0's doubled, and evaluate's spectrum
    metrics (spin degeneracy 1) equal the spinless ones (spin degeneracy 2) for the same prediction."""
    from zoo.bench.evaluate import evaluate

    ds0 = _write(tmp_path / "spinless", spinful=False)
    ds1 = _write(tmp_path / "spinful", spinful=True, soc=0.0)
    r0, r1 = ds0.read("s2"), ds1.read("s2")
    e0, e1 = r0.eigvalsh(), r1.eigvalsh()
    np.testing.assert_allclose(e1, np.repeat(e0, 2), atol=1e-10)
    info0, info1 = (DatasetInfo.from_dataset(ds0), DatasetInfo.from_dataset(ds1))
    m0, _ = evaluate(_Scaled(False), ds0, info0, torch.device("cpu"), torch.float64)
    m1, _ = evaluate(_Scaled(True), ds1, info1, torch.device("cpu"), torch.float64)
    assert m1["spectrum"] == m0["spectrum"] == "H,S"
    for key in ("gap_err_mev", "eig_mae_occ_mev", "eig_mae_ef2_mev", "eig_rel_l1_occ", "gap_ref_ev"):
        assert np.isfinite(m0[key]) and abs(m1[key] - m0[key]) < 1e-6 * max(1.0, abs(m0[key])), key
    assert m1["node_mae_im_mev"] == 0.0 and "node_mae_im_mev" not in m0


def test_evaluate_trivial_soc(tmp_path):
    from zoo.bench.evaluate import evaluate
    from zoo.models import build_model

    ds = _write(tmp_path / "soc", spinful=True)
    info = DatasetInfo.from_dataset(ds)
    torch.manual_seed(0)
    model = build_model("trivial-soc", info).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    metrics, report = evaluate(model, ds, info, torch.device("cpu"), torch.float64)
    for key in ("node_mae_mev", "edge_mae_mev", "total_mae_mev", "node_mae_re_mev", "node_mae_im_mev",
                "edge_mae_im_mev", "eig_mae_mev", "hermiticity_max_mev"):
        assert np.isfinite(metrics[key]), key
    assert metrics["edge_mae_im_mev"] > 0
    # SU(2) equivariance of the spinful model, measured with the spinful rotation
    assert metrics["equivariance_max_mev"] < 1e-8
    assert np.isrealobj(report["parity_ref"])


def test_bench_and_predict_spinful(tmp_path):
    """zoo bench then zoo predict on spinful data: complex 2n x 2n blocks, hermitian, equal to the model's."""
    from zoo.bench.predict import model_from_checkpoint
    from zoo.cli.main import main
    from zoo.models.contract import symmetrize_prediction

    ds = _write(tmp_path / "soc", spinful=True)
    lb, runs = tmp_path / "lb", tmp_path / "runs"
    assert main(["bench", "--model", "trivial-soc", "--dataset", str(ds.path), "--max-epochs", "2", "--quiet",
                 "--set", "dtype=float64", "--leaderboard-dir", str(lb), "--runs-dir", str(runs)]) == 0
    (run_dir,) = list((runs / "toy-soc").iterdir())
    test = ds.read("s2")
    test.structure.to_ase().write(tmp_path / "s2.xyz", format="extxyz")
    assert main(["predict", str(run_dir / "checkpoint.pt"), str(tmp_path / "s2.xyz"), "-o", str(tmp_path / "H.npz")]) == 0
    h = np.load(tmp_path / "H.npz")
    assert bool(h["spinful"]) and np.iscomplexobj(h["h_onsite"])
    np.testing.assert_array_equal(h["norb"], test.norb)
    assert h["h_onsite"].size == int((h["norb"] ** 2).sum())
    # the written blocks are the hermitized full-graph prediction, in the flat spinful layout
    model, info, _ = model_from_checkpoint(run_dir / "checkpoint.pt")
    data = record_to_data(test, info.layout, torch.float64)
    with torch.no_grad():
        p = symmetrize_prediction(model(data), data)
    ei = data.edge_index.numpy()
    z = test.numbers
    on = unpad_blocks(p.node_blocks.numpy(), info.layout.index, z, z, spinful=True)
    # extxyz rounds positions (~1e-10 Ha here), so compare at 1e-8
    np.testing.assert_allclose(h["h_onsite"], on, atol=1e-8)
    off = unpad_blocks(p.edge_blocks.numpy(), info.layout.index, z[ei[0]], z[ei[1]], spinful=True)
    k = [0.1, -0.2, 0.3]
    mine = assemble(test.norb, on, ei.T, data.edge_shift.numpy().round().astype(int), off, k=k).toarray()
    written = assemble(h["norb"], h["h_onsite"], h["edge_index"], h["edge_shift"], h["h_offsite"], k=k).toarray()
    assert np.abs(mine).max() > 1e-3
    np.testing.assert_allclose(written, mine, atol=1e-8)
    np.testing.assert_allclose(written, written.conj().T, atol=1e-12)
