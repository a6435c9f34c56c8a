"""Metric suite against hand-computed values on small matrices."""

import math

import numpy as np
import pytest
import torch

from zoo.bench.metrics import BlockErrors, block_metrics, equivariance_error, spectrum_metrics
from zoo.physics.basis import BasisSet, OrbitalLayout
from zoo.physics.units import HARTREE_EV, MEV_PER_HARTREE

# H: one s shell (1 orbital); O: s + p (4 orbitals) -> padded layout s, p with n_max = 4
LAYOUT = OrbitalLayout(BasisSet("t", {1: (0,), 8: (0, 1)}), [1, 8])


def _masks(z_rows, z_cols):
    return np.stack([LAYOUT.mask[a][:, None] & LAYOUT.mask[b][None, :] for a, b in zip(z_rows, z_cols)])


def test_block_metrics_hand_values():
    z = np.array([1, 8])
    ref_n = np.zeros((2, 4, 4))
    pred_n = np.zeros((2, 4, 4))
    pred_n[0, 0, 0] = 0.001  # H on-site: 1 entry, |e| = 1 mEh
    pred_n[1] += 0.002  # O on-site: 16 entries, |e| = 2 mEh each
    pred_n[0, 1:, :] = 5.0  # padding of the H atom must be ignored
    ei = np.array([[0, 1], [1, 0]])  # H->O (1x4 block), O->H (4x1 block)
    ref_e = np.zeros((2, 4, 4))
    pred_e = np.zeros((2, 4, 4))
    pred_e[0, 0, :] = [0.004, 0.0, 0.0, 0.0]  # H->O: 4 entries, errors 4,0,0,0 mEh
    pred_e[1, :, 0] = [0.0, 0.0, 0.0, 0.008]  # O->H: 4 entries, errors 0,0,0,8 mEh (a p-s entry)
    pred_e[:, 3, 3] = 9.0  # padding on both edges
    m = block_metrics(pred_n, ref_n, _masks(z, z), pred_e, ref_e, _masks(z[ei[:, 0]], z[ei[:, 1]]), z, ei.T,
                      LAYOUT, dist=np.array([1.0, 1.0]), bins=[0.0, 0.5, 2.0])
    node = np.array([1.0] + [2.0] * 16)
    edge = np.array([4.0, 0, 0, 0, 0, 0, 0, 8.0])
    both = np.concatenate([node, edge])
    assert m["node_mae_meh"] == pytest.approx(node.mean())
    assert m["edge_mae_meh"] == pytest.approx(1.5)
    assert m["total_mae_meh"] == pytest.approx(both.mean())  # element-weighted, not (node+edge)/2
    assert m["total_mae_meh"] != pytest.approx(0.5 * (node.mean() + 1.5))
    assert m["node_std_meh"] == pytest.approx(node.std())  # std of |errors|
    assert m["edge_std_meh"] == pytest.approx(edge.std())
    assert m["edge_mae_mev"] == pytest.approx(1.5e-3 * MEV_PER_HARTREE)
    assert MEV_PER_HARTREE == pytest.approx(27211.386, rel=1e-6)
    assert m["edge_mae_mev[H-O]"] == pytest.approx(1.5e-3 * MEV_PER_HARTREE)
    # orbital pairs: ss = H on-site (1), O on-site ss (2), edge ss entries (4, 0); sp = O on-site sp/ps (6 x 2)
    # + edge s-p entries (0,0,0 and 0,0,8)
    assert m["mae_mev[ss]"] == pytest.approx(np.mean([1, 2, 4, 0]) * 1e-3 * MEV_PER_HARTREE)
    assert m["mae_mev[sp]"] == pytest.approx(np.mean([2] * 6 + [0, 0, 0, 0, 0, 8]) * 1e-3 * MEV_PER_HARTREE)
    assert m["mae_mev[pp]"] == pytest.approx(2e-3 * MEV_PER_HARTREE)


def test_distance_profile():
    acc = BlockErrors(LAYOUT, [0.0, 1.0, 2.0, 3.0])
    z = np.array([8, 8])
    mask = _masks(z, z)
    ref = np.zeros((2, 4, 4))
    pred = np.zeros((2, 4, 4))
    pred[0] = 0.001
    pred[1] = 0.003
    acc.add_edges(pred, ref, mask, z, z, dist=np.array([0.5, 2.5]))
    prof = acc.distance_profile()
    assert prof["count"] == [16, 0, 16]
    assert prof["mae_mev"][0] == pytest.approx(1e-3 * MEV_PER_HARTREE)
    assert math.isnan(prof["mae_mev"][1])
    assert prof["mae_mev"][2] == pytest.approx(3e-3 * MEV_PER_HARTREE)


def test_spectrum_metrics_hand_values():
    e_ref = np.array([-0.2, -0.1, 0.1, 0.3])
    e_pred = np.array([-0.21, -0.1, 0.12, 0.3])
    m = spectrum_metrics(e_ref, e_pred, n_electrons=4)
    assert m["eig_rel_l1"] == pytest.approx(0.03 / 0.7)
    assert m["eig_rel_l2"] == pytest.approx(math.sqrt(0.01**2 + 0.02**2) / math.sqrt(0.04 + 0.01 + 0.01 + 0.09))
    assert m["eig_rel_l1_occ"] == pytest.approx(0.01 / 0.3)
    assert m["eig_rel_l2_occ"] == pytest.approx(0.01 / math.sqrt(0.05))
    assert m["gap_ref_ev"] == pytest.approx(0.2 * HARTREE_EV)
    assert m["gap_err_mev"] == pytest.approx(0.02 * MEV_PER_HARTREE)
    # E_F = 0 (mid-gap); +-5 eV = +-0.184 Ha holds the states -0.1 and 0.1 (errors 0 and 0.02)
    assert m["eig_mae_window_mev"] == pytest.approx(0.01 * MEV_PER_HARTREE)
    m2 = spectrum_metrics(e_ref, e_pred, n_electrons=None)
    assert math.isnan(m2["gap_err_mev"]) and m2["eig_rel_l1"] == pytest.approx(m["eig_rel_l1"])


def test_equivariance_error_detects_a_broken_model():
    from torch_geometric.data import Data

    from zoo.data.torch_data import DatasetInfo
    from zoo.models.registry import build_model

    info = DatasetInfo(LAYOUT, 3.0)
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.3, -0.2], [-0.5, 1.0, 0.4]], dtype=torch.float64)
    ei = torch.tensor([[0, 1, 0, 2, 1, 2], [1, 0, 2, 0, 2, 1]])
    data = Data(z=torch.tensor([8, 1, 8]), pos=pos, cell=torch.zeros(1, 3, 3, dtype=torch.float64), edge_index=ei,
                edge_shift=torch.zeros(6, 3, dtype=torch.float64),
                node_orb_mask=torch.as_tensor(LAYOUT.mask_table()[[8, 1, 8]]), num_nodes=3)
    torch.manual_seed(0)
    good = build_model("sk", info, init_scale=0.3).double()
    assert equivariance_error(good, data, LAYOUT, seed=1)["equivariance_rel"] < 1e-5

    class Broken(torch.nn.Module):  # blocks from raw x coordinates: not equivariant
        def forward(self, b):
            from zoo.models.contract import Prediction

            x = b.pos[:, 0]
            node = x[:, None, None] * torch.ones(len(x), 4, 4, dtype=x.dtype)
            i, j = b.edge_index
            return Prediction(node, (x[j] - x[i])[:, None, None] * torch.ones(len(i), 4, 4, dtype=x.dtype))

    assert equivariance_error(Broken(), data, LAYOUT, seed=1)["equivariance_rel"] > 1e-2
