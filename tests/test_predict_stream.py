"""`zoo predict` streams augmented partitions for large structures: same blocks as one pass, and
the harness hermitizes what it writes and scores (the raw output's defect is reported)."""

import pytest
import torch

from tests.conftest import tiny_hfo2
from zoo.bench.predict import predict_blocks
from zoo.data.format import Structure
from zoo.data.torch_data import DatasetInfo, structure_to_data
from zoo.models import build_model, symmetrize_prediction
from zoo.models.contract import Prediction, hermiticity_error, reverse_edges
from zoo.physics.basis import OrbitalLayout, get_basis

LAYOUT = OrbitalLayout(get_basis("szv-molopt-sr"), [8, 72])


@pytest.mark.parametrize("name,hp", [("sk", {}), ("escn", {"num_layers": 2, "sphere_channels": 4,
                                                            "ffn_hidden_channels": 8, "edge_channels": 8})])
def test_streamed_prediction_equals_single_pass(name, hp):
    torch.manual_seed(0)
    model = build_model(name, DatasetInfo(LAYOUT, 3.5), **hp).double().eval()
    st = Structure.from_ase(tiny_hfo2(1, reps=(3, 1, 1)))
    data = structure_to_data(st, LAYOUT, 3.5, torch.float64)
    full_n, full_e = predict_blocks(model, data.clone(), max_atoms_per_part=10_000, hermitize=False)
    part_n, part_e = predict_blocks(model, data.clone(), max_atoms_per_part=12, hermitize=False)  # 3 partitions
    torch.testing.assert_close(part_n, full_n, atol=1e-10, rtol=0)
    torch.testing.assert_close(part_e, full_e, atol=1e-10, rtol=0)
    assert full_e.abs().max() > 1e-6


@pytest.mark.parametrize("name,hp", [("trivial", {}), ("escn", {"num_layers": 2, "sphere_channels": 4,
                                                                 "ffn_hidden_channels": 8, "edge_channels": 8})])
def test_streamed_prediction_is_hermitized_across_partitions(name, hp):
    """zoo predict's blocks: exactly hermitian, and equal to the hermitized full-graph prediction, even for
    pairs H_ij(R), H_ji(-R) labelled by different partitions."""
    from zoo.data.partition import partition

    torch.manual_seed(0)
    model = build_model(name, DatasetInfo(LAYOUT, 3.5), **hp).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # move away from initial values (trivial's on-site starts at 0)
    st = Structure.from_ase(tiny_hfo2(1, reps=(3, 1, 1)))
    data = structure_to_data(st, LAYOUT, 3.5, torch.float64)
    with torch.no_grad():
        raw = model(data.clone())
        ref = symmetrize_prediction(raw, data)
    assert hermiticity_error(raw, data, relative=True) > 1e-3  # the backbone is not hermitian by itself
    node, edge = predict_blocks(model, data.clone(), max_atoms_per_part=12)  # 3 partitions
    assert hermiticity_error(Prediction(node, edge), data) == 0.0
    torch.testing.assert_close(node, ref.node_blocks, atol=1e-10, rtol=0)
    torch.testing.assert_close(edge, ref.edge_blocks, atol=1e-10, rtol=0)

    # the case that matters: pairs whose two halves come from different partitions (same cut as predict's)
    parts = partition(data, "rcb", n_parts=3, hops=int(model.message_passing_layers), virtual="one-way",
                      flow=model.message_flow, allow_self_images=True)
    owner = torch.full((data.edge_index.shape[1],), -1)
    for k, p in enumerate(parts):
        owner[p.orig_edge[p.edge_label_mask]] = k
    rev = reverse_edges(data.edge_index, data.edge_shift, data.num_nodes)
    assert (rev >= 0).all() and (owner >= 0).all()
    assert (owner != owner[rev]).sum() > 10


def test_evaluate_reports_raw_hermiticity_and_scores_the_hermitized_h(tmp_path):
    """A stand-in backbone returning the reference H plus an anti-hermitian part K (K_ii = -K_ii^T,
    K_ji(-R) = -K_ij(R)^T): hermitized it is exact, so every metric is zero, while the leaderboard's
    hermiticity_max_mev is max|2K| of the raw output."""
    from tests.conftest import write_toy_dataset
    from zoo.bench.evaluate import evaluate
    from zoo.data.format import Dataset
    from zoo.models.contract import Backbone
    from zoo.physics.units import MEV_PER_HARTREE

    class ReferencePlusAntihermitian(Backbone):
        def __init__(self, info):
            super().__init__(info)
            self.scale = torch.nn.Parameter(torch.tensor(2e-3))

        def forward(self, batch):
            g = torch.Generator().manual_seed(int(batch.edge_index.shape[1]))
            n = batch.y_node.shape[-1]
            a = torch.randn(batch.num_nodes, n, n, generator=g, dtype=batch.y_node.dtype).to(batch.y_node.device)
            f = torch.randn(batch.edge_index.shape[1], n, n, generator=g, dtype=batch.y_edge.dtype).to(batch.y_edge.device)
            rev = reverse_edges(batch.edge_index, batch.edge_shift, batch.num_nodes)
            k_node = self.scale * (a - a.transpose(1, 2))
            k_edge = self.scale * (f - f[rev].transpose(1, 2))
            return Prediction(batch.y_node + k_node, batch.y_edge + k_edge)

    ds = Dataset.open(write_toy_dataset(tmp_path / "toy"))
    info = DatasetInfo.from_dataset(ds)
    model = ReferencePlusAntihermitian(info).double()
    metrics, _ = evaluate(model, ds, info, torch.device("cpu"), torch.float64)
    (rec,) = list(ds.records("test"))
    from zoo.data.torch_data import record_to_data

    data = record_to_data(rec, info.layout, torch.float64)
    with torch.no_grad():
        raw = model(data)
    expected = hermiticity_error(raw, data) * MEV_PER_HARTREE
    assert expected > 1.0  # ~ 2 * 2 mEh * |a - a^T| ~ tens of meV
    assert metrics["hermiticity_max_mev"] == pytest.approx(expected, rel=1e-12)
    for key in ("node_mae_mev", "edge_mae_mev", "total_mae_mev"):
        assert metrics[key] < 1e-9, (key, metrics[key])
    assert metrics["eig_rel_l1"] < 1e-12
