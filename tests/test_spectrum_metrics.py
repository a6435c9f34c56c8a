"""Spectrum metrics: the energy-zero-invariant eigenvalue MAEs, and the H-only (pseudo-spectrum) path.

Periodic H has an arbitrary energy zero (ADR 0002): H -> H + c S shifts every eigenvalue of
H c = e S c by c. An error figure that a reader compares across codes or builds must not move
with c; the seed's relative L1/L2 (divided by ||E_ref||) does, which these tests show.
"""

import math

import numpy as np
import pytest

from tests.conftest import tiny_hfo2
from zoo.bench.metrics import SPECTRUM_KEYS, spectrum_metrics
from zoo.data.format import Structure
from zoo.data.synthetic import toy_record
from zoo.physics import spectra
from zoo.physics.basis import get_basis
from zoo.physics.units import HARTREE_EV, MEV_PER_HARTREE

INVARIANT = ("eig_mae_mev", "eig_mae_occ_mev", "eig_mae_ef2_mev", "gap_err_mev")


def test_new_figures_hand_values():
    # four states, two electrons per state, 4 electrons -> two occupied; E_F = mid-gap = 0
    e_ref = np.array([-0.2, -0.05, 0.05, 0.3])
    e_pred = np.array([-0.21, -0.05, 0.07, 0.33])
    m = spectrum_metrics(e_ref, e_pred, n_electrons=4)
    assert set(m) == set(SPECTRUM_KEYS)
    assert m["eig_mae_mev"] == pytest.approx((0.01 + 0 + 0.02 + 0.03) / 4 * MEV_PER_HARTREE)
    assert m["eig_mae_occ_mev"] == pytest.approx((0.01 + 0) / 2 * MEV_PER_HARTREE)
    # E_F +- 2 eV = +-0.0735 Ha holds -0.05 and 0.05 only (errors 0 and 0.02)
    assert 2.0 / HARTREE_EV < 0.2
    assert m["eig_mae_ef2_mev"] == pytest.approx(0.01 * MEV_PER_HARTREE)
    # E_F +- 5 eV = +-0.184 Ha holds the same two states: windows are nested
    assert m["eig_mae_window_mev"] == pytest.approx(m["eig_mae_ef2_mev"])


def _shifted(rec, c, with_overlap):
    """The record with H -> H + c S (with_overlap) or H + c I (H only), block by block."""
    out = rec.with_blocks(rec.h_onsite.copy(), rec.h_offsite.copy())
    if with_overlap:
        out.h_onsite = out.h_onsite + c * rec.s_onsite
        out.h_offsite = out.h_offsite + c * rec.s_offsite
    else:  # c I: the identity lives on the on-site diagonals only
        norb = rec.norb
        off = 0
        h = out.h_onsite.copy()
        for n in norb:
            h[off:off + n * n] += c * np.eye(n).reshape(-1)
            off += n * n
        out.h_onsite = h
    return out


@pytest.fixture(scope="module")
def ref_and_pred():
    basis = get_basis("szv-molopt-sr")
    ref = toy_record(Structure.from_ase(tiny_hfo2(1, reps=(1, 1, 1))), basis, 4.0, overlap=True)
    rng = np.random.default_rng(0)
    # a "prediction": the reference with a hermitian-preserving error on the on-site blocks
    pred_on = ref.h_onsite.copy()
    off = 0
    for n in ref.norb:
        e = 2e-3 * rng.standard_normal((n, n))
        pred_on[off:off + n * n] += (e + e.T).reshape(-1)
        off += n * n
    pred = ref.with_blocks(pred_on, ref.h_offsite + 1e-3 * rng.standard_normal(ref.h_offsite.shape))
    return ref, pred


def test_generalized_spectrum_figures_do_not_move_with_the_energy_zero(ref_and_pred):
    ref, pred = ref_and_pred
    assert ref.has_overlap
    base = spectrum_metrics(ref.eigvalsh(), pred.eigvalsh(), ref.n_electrons)
    assert all(math.isfinite(base[k]) and base[k] > 0 for k in INVARIANT if k != "gap_err_mev")
    c = -0.12  # the CP2K vs PySCF offset of ADR 0002
    r2, p2 = _shifted(ref, c, True), _shifted(pred, c, True)
    e_ref2 = r2.eigvalsh()
    np.testing.assert_allclose(e_ref2, ref.eigvalsh() + c, atol=1e-9)  # H + cS shifts every level by c
    shifted = spectrum_metrics(e_ref2, p2.eigvalsh(), ref.n_electrons)
    for k in INVARIANT:
        assert shifted[k] == pytest.approx(base[k], rel=1e-6, abs=1e-9), k
    # the seed's relative error is divided by ||E_ref||, which the shift changes: same model, other score
    assert abs(shifted["eig_rel_l1"] / base["eig_rel_l1"] - 1) > 0.05
    assert abs(shifted["eig_rel_l1_occ"] / base["eig_rel_l1_occ"] - 1) > 0.05


def test_pseudo_spectrum_path(ref_and_pred):
    """eig(H) without S (what evaluate falls back to when S is indefinite): no occupation, so only the
    all-states figures exist; they are invariant under H + c I."""
    ref, pred = ref_and_pred
    e_ref = spectra.eigh(ref.matrix("H", hermitize=True))
    e_pred = spectra.eigh(pred.matrix("H", hermitize=True))
    m = spectrum_metrics(e_ref, e_pred, None)
    assert math.isfinite(m["eig_mae_mev"]) and m["eig_mae_mev"] > 0
    for k in ("eig_mae_occ_mev", "eig_mae_ef2_mev", "eig_mae_window_mev", "gap_err_mev", "eig_rel_l1_occ"):
        assert math.isnan(m[k]), k
    c = 0.3
    r2, p2 = _shifted(ref, c, False), _shifted(pred, c, False)
    e_ref2 = spectra.eigh(r2.matrix("H", hermitize=True))
    np.testing.assert_allclose(e_ref2, e_ref + c, atol=1e-9)
    m2 = spectrum_metrics(e_ref2, spectra.eigh(p2.matrix("H", hermitize=True)), None)
    assert m2["eig_mae_mev"] == pytest.approx(m["eig_mae_mev"], rel=1e-6)
    assert abs(m2["eig_rel_l1"] / m["eig_rel_l1"] - 1) > 0.05
    # the pseudo-spectrum is not the generalized one: the two figures must not be passed off as each other
    assert abs(m["eig_mae_mev"] - spectrum_metrics(ref.eigvalsh(), pred.eigvalsh(), None)["eig_mae_mev"]) > 1e-3


def test_spectra_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="different sizes"):
        spectrum_metrics(np.zeros(3), np.zeros(4), None)


# -- the trained-model equivariance metric (issue 13): proper and improper rotations ----------------------

def test_equivariance_metric_catches_a_parity_violation():
    """A model that is rotation-equivariant but odd under inversion passes a proper rotation only."""
    import torch
    from torch_geometric.data import Data

    from zoo.bench.metrics import equivariance_error
    from zoo.data.torch_data import DatasetInfo
    from zoo.models.contract import Prediction
    from zoo.models.registry import build_model
    from zoo.physics.basis import BasisSet, OrbitalLayout

    layout = OrbitalLayout(BasisSet("t", {1: (0,), 8: (0, 1)}), [1, 8])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.3, -0.2], [-0.5, 1.0, 0.4], [0.2, -0.4, 1.1]], dtype=torch.float64)
    ei = torch.tensor([[i, j] for i in range(4) for j in range(4) if i != j]).T
    z = torch.tensor([8, 1, 8, 1])
    data = Data(z=z, pos=pos, cell=torch.zeros(1, 3, 3, dtype=torch.float64), edge_index=ei,
                edge_shift=torch.zeros(ei.shape[1], 3, dtype=torch.float64),
                node_orb_mask=torch.as_tensor(layout.mask_table()[z.numpy()]), num_nodes=4)
    torch.manual_seed(0)
    sk = build_model("sk", DatasetInfo(layout, 3.0), init_scale=0.3).double()

    class Pseudo(torch.nn.Module):
        """sk's blocks times the triple product of three bonds: invariant under rotations, odd under inversion."""

        def forward(self, b):
            p = sk(b)
            r = b.pos[1:] - b.pos[0]
            psi = torch.dot(r[0], torch.cross(r[1], r[2], dim=0))
            return Prediction(psi * p.node_blocks, psi * p.edge_blocks)

    assert equivariance_error(sk, data, layout, seed=1)["equivariance_rel"] < 1e-6
    assert equivariance_error(Pseudo(), data, layout, seed=1, improper=(False,))["equivariance_rel"] < 1e-6
    err = equivariance_error(Pseudo(), data, layout, seed=1)  # the default: a proper rotation and -R
    assert err["equivariance_rel"] == pytest.approx(2.0, rel=1e-6)  # f(-Rx) = -D f(x) D^T: ||2 f|| / ||f||
