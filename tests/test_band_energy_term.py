"""The band-energy extra term (zoo.bench.terms): value, window, gradients, refusals, spinful data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_hfo2
from zoo.bench.terms import EXTRA_TERMS, band_energy, check_term_params
from zoo.data.format import Structure
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import DatasetInfo, collate, record_to_data
from zoo.errors import ConfigError, ZooError
from zoo.models.contract import Prediction
from zoo.physics.assembly import unpad_blocks
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.spectra import fermi_level
from zoo.physics.torch_spectra import random_kpoints
from zoo.physics.units import HARTREE_EV

BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [72, 8])


def _graph(seed: int = 0, overlap: bool = True, n_electrons: bool = True):
    """A rattled 12-atom HfO2 cell (rattling lifts the fluorite degeneracies) and its float64 graph."""
    rec = toy_record(Structure.from_ase(tiny_hfo2(seed, reps=(1, 1, 1))), BASIS, 4.0, name=f"c{seed}",
                     seed=seed, overlap=overlap)
    data = record_to_data(rec, LAYOUT, torch.float64)
    if n_electrons:
        data.n_electrons = torch.tensor([rec.n_electrons], dtype=torch.float64)
    return rec, data


def _info(name: str = "toy", **kw) -> DatasetInfo:
    return DatasetInfo(LAYOUT, 4.0, name=name, has_overlap=kw.pop("has_overlap", True), **kw)


def _noise(data, scale: float, seed: int = 1) -> Prediction:
    """A prediction: the reference plus random (not hermitian) noise on real-orbital entries."""
    g = torch.Generator().manual_seed(seed)
    mn = data.node_orb_mask[:, :, None] & data.node_orb_mask[:, None, :]
    i, j = data.edge_index
    me = data.node_orb_mask[i][:, :, None] & data.node_orb_mask[j][:, None, :]
    n = torch.randn(data.y_node.shape, generator=g, dtype=torch.float64) * mn
    e = torch.randn(data.y_edge.shape, generator=g, dtype=torch.float64) * me
    return Prediction(data.y_node + scale * n, data.y_edge + scale * e)


def test_registered():
    assert EXTRA_TERMS["band_energy"] is band_energy


def test_rigid_shift_of_the_spectrum_is_measured_exactly():
    """H + c S has generalized eigenvalues e + c: the term must be exactly |c|."""
    rec, data = _graph()
    c = 0.0123
    pred = Prediction(data.y_node + c * data.s_node, data.y_edge + c * data.s_edge)
    s, n = band_energy(None, pred, data, _info(), n_k=3, window_ev=5.0)
    assert n > 0
    assert float(s / n) == pytest.approx(c, abs=1e-11)
    s0, n0 = band_energy(None, Prediction(data.y_node, data.y_edge), data, _info(), n_k=3)
    assert float(s0) == pytest.approx(0.0, abs=1e-11) and n0 == n


@pytest.mark.parametrize("with_ne", [True, False])
def test_value_equals_scipy_spectra_in_the_window(with_ne):
    """sum / count equals an independent scipy computation at the same k-points and E_F rule."""
    rec, data = _graph(seed=1, n_electrons=with_ne)
    pred = _noise(data, 0.01)
    n_k, window_ev, seed = 3, 4.0, 11
    s, n = band_energy(None, pred, data, _info(), n_k=n_k, window_ev=window_ev, seed=seed)

    z, ei = rec.numbers, rec.edge_index
    rec_pred = rec.with_blocks(unpad_blocks(pred.node_blocks.numpy(), LAYOUT.index, z, z),
                               unpad_blocks(pred.edge_blocks.numpy(), LAYOUT.index, z[ei[:, 0]], z[ei[:, 1]]))
    ks = random_kpoints(n_k, rec.pbc, torch.Generator().manual_seed(seed)).numpy()
    e_ref = np.stack([rec.eigvalsh(k) for k in ks])
    e_pred = np.stack([rec_pred.eigvalsh(k) for k in ks])
    ef = fermi_level(e_ref, rec.n_electrons) if with_ne else float(np.median(e_ref))
    sel = np.abs(e_ref - ef) <= window_ev / HARTREE_EV
    assert 0 < sel.sum() < sel.size  # the window really selects
    assert int(n) == sel.sum()
    assert float(s) == pytest.approx(np.abs(e_pred - e_ref)[sel].sum(), rel=1e-10)


def test_gradient_matches_finite_differences():
    """d(term)/d(prediction entries) by autograd vs central differences (float64, non-degenerate window)."""
    rec, data = _graph(seed=2)
    base = _noise(data, 0.01, seed=3)
    info = _info()
    # a few real-orbital entries, on-site and off-site (the prediction is hermitized inside the assembly)
    picks = [("node", 0, 0, 0), ("node", 3, 1, 2), ("node", 7, 2, 0), ("edge", 0, 0, 1), ("edge", 5, 1, 1),
             ("edge", 17, 3, 0)]
    for kind, b, a1, a2 in picks:
        mask = data.node_orb_mask
        if kind == "node":
            assert mask[b, a1] and mask[b, a2]
        else:
            i, j = data.edge_index[:, b]
            assert mask[i, a1] and mask[j, a2]

    def term(x: torch.Tensor) -> torch.Tensor:
        node, edge = base.node_blocks.clone(), base.edge_blocks.clone()
        for t, (kind, b, a1, a2) in enumerate(picks):
            if kind == "node":
                node[b, a1, a2] = node[b, a1, a2] + x[t]
            else:
                edge[b, a1, a2] = edge[b, a1, a2] + x[t]
        s, n = band_energy(None, Prediction(node, edge), data, info, n_k=2, window_ev=5.0, seed=5)
        return s / n

    # the eigenvalues in the window are non-degenerate and differ from the reference (|.| smooth there)
    with torch.no_grad():
        from zoo.physics.torch_spectra import bloch_sum, generalized_eigvalsh

        k = random_kpoints(2, rec.pbc, torch.Generator().manual_seed(5))
        args = (data.edge_index, data.edge_shift, data.node_orb_mask, k)
        s_k = bloch_sum(data.s_node, data.s_edge, *args)
        e_pred = generalized_eigvalsh(bloch_sum(base.node_blocks, base.edge_blocks, *args), s_k)
        e_ref = generalized_eigvalsh(bloch_sum(data.y_node, data.y_edge, *args), s_k)
    assert float(torch.diff(e_pred, dim=-1).min()) > 1e-5
    assert float((e_pred - e_ref).abs().min()) > 1e-7

    x = torch.zeros(len(picks), dtype=torch.float64, requires_grad=True)
    grad, = torch.autograd.grad(term(x), x)
    h = 1e-6
    fd = torch.stack([(term(h * torch.eye(len(picks), dtype=torch.float64)[t]) -
                       term(-h * torch.eye(len(picks), dtype=torch.float64)[t])) / (2 * h) for t in range(len(picks))])
    assert grad.abs().min() > 1e-4  # every picked entry moves the band energy
    np.testing.assert_allclose(grad.numpy(), fd.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_batch_sums_and_counts_add_up():
    """Two structures in one batch = the two separately (the (sum, count) form DDP relies on)."""
    (_, d0), (_, d1) = _graph(0), _graph(1)
    p0, p1 = _noise(d0, 0.01, 1), _noise(d1, 0.01, 2)
    batch = collate([d0, d1])
    pb = Prediction(torch.cat([p0.node_blocks, p1.node_blocks]), torch.cat([p0.edge_blocks, p1.edge_blocks]))
    sb, nb = band_energy(None, pb, batch, _info(), n_k=2, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the same draws, one structure after the other
    s0, n0 = band_energy(None, p0, d0, _info(), n_k=2, generator=g)
    s1, n1 = band_energy(None, p1, d1, _info(), n_k=2, generator=g)
    assert float(nb) == float(n0 + n1)
    assert float(sb) == pytest.approx(float(s0 + s1), rel=1e-12)


def test_partition_is_refused():
    _, data = _graph()
    data.node_label_mask[0] = False  # a virtual (halo) node: this graph is a partition
    with pytest.raises(ConfigError, match="partition.*`data: full`"):
        band_energy(None, Prediction(data.y_node, data.y_edge), data, _info())


def test_indefinite_overlap_is_refused_naming_the_dataset():
    rec, data = _graph()
    data.s_edge = data.s_edge * 6.0  # off-site overlap too large: S indefinite, as truncated tblite S is
    s_gamma = rec.matrix("S").toarray()
    s_gamma = np.eye(len(s_gamma)) + 6.0 * (s_gamma - np.eye(len(s_gamma)))
    assert np.linalg.eigvalsh(s_gamma).min() < 0
    with pytest.raises(ZooError, match=r"dataset 'a-hfo2-small', structure 'c0' is not positive definite"):
        band_energy(None, Prediction(data.y_node, data.y_edge), data, _info("a-hfo2-small"))


def test_without_overlap_the_basis_is_orthonormal():
    rec, data = _graph(overlap=False)
    pred = _noise(data, 0.01)
    s, n = band_energy(None, pred, data, _info(has_overlap=False), n_k=1, window_ev=50.0, seed=2)
    assert int(n) == 1 * int(rec.norb.sum())  # a window of +-50 eV holds the whole toy spectrum
    k = random_kpoints(1, rec.pbc, torch.Generator().manual_seed(2))[0].numpy()
    z, ei = rec.numbers, rec.edge_index
    rec_pred = rec.with_blocks(unpad_blocks(pred.node_blocks.numpy(), LAYOUT.index, z, z),
                               unpad_blocks(pred.edge_blocks.numpy(), LAYOUT.index, z[ei[:, 0]], z[ei[:, 1]]))
    assert float(s) == pytest.approx(np.abs(rec_pred.eigvalsh(k) - rec.eigvalsh(k)).sum(), rel=1e-10)
    with pytest.raises(ZooError, match="has an overlap S but the batch carries no s_node"):
        band_energy(None, pred, data, _info(has_overlap=True))


def test_bad_parameters_are_config_errors():
    _, data = _graph()
    pred = Prediction(data.y_node, data.y_edge)
    with pytest.raises(ConfigError, match="n_k must be a positive integer"):
        band_energy(None, pred, data, _info(), n_k=0)
    with pytest.raises(ConfigError, match="window_ev must be a positive number"):
        band_energy(None, pred, data, _info(), window_ev=-1.0)
    with pytest.raises(ConfigError, match=r"has no parameter\(s\) \['nk'\]"):
        check_term_params("band_energy", {"nk": 3})
    with pytest.raises(ConfigError, match="unknown extra term 'bands'"):
        check_term_params("bands", {})
    check_term_params("band_energy", {"n_k": 3, "window_ev": 2.0, "seed": 1})


def test_spinful_spin_degeneracy_one_and_gradients():
    from zoo.data.synthetic import toy_spinful_record
    from zoo.physics.torch_spectra import spinful_overlap_blocks

    rec = toy_spinful_record(Structure.from_ase(tiny_hfo2(3, reps=(1, 1, 1))), BASIS, 4.0, name="soc")
    data = record_to_data(rec, LAYOUT, torch.float64)
    data.n_electrons = torch.tensor([rec.n_electrons], dtype=torch.float64)
    info = _info(spinful=True)
    assert data.y_node.is_complex()
    # a rigid shift H + c S (S = 1_spin (x) S0) is measured exactly
    c = -0.007
    pred = Prediction(data.y_node + c * spinful_overlap_blocks(data.s_node),
                      data.y_edge + c * spinful_overlap_blocks(data.s_edge))
    s, n = band_energy(None, pred, data, info, n_k=2, window_ev=3.0, seed=9)
    assert float(s / n) == pytest.approx(abs(c), abs=1e-11)
    # E_F from n_electrons with spin degeneracy 1 (one electron per spin orbital): same count as scipy
    ks = random_kpoints(2, rec.pbc, torch.Generator().manual_seed(9)).numpy()
    e_ref = np.stack([rec.eigvalsh(k) for k in ks])
    ef = fermi_level(e_ref, rec.n_electrons, spin_degeneracy=1)
    assert int(n) == int((np.abs(e_ref - ef) <= 3.0 / HARTREE_EV).sum()) > 0
    # gradients reach both real and imaginary parts of the complex prediction
    node = (data.y_node + 0.01 * torch.randn(data.y_node.shape, dtype=data.y_node.dtype,
                                             generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    s, n = band_energy(None, Prediction(node, data.y_edge), data, info, n_k=2, window_ev=3.0, seed=9)
    (s / n).backward()
    g = node.grad[data.node_orb_mask[:, :, None] & data.node_orb_mask[:, None, :]]
    assert torch.isfinite(g).all() and g.real.abs().max() > 0 and g.imag.abs().max() > 0
