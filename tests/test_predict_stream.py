"""`zoo predict` streams augmented partitions for large structures: same blocks as one pass."""

import pytest
import torch

from tests.conftest import tiny_hfo2
from zoo.bench.predict import predict_blocks
from zoo.data.format import Structure
from zoo.data.torch_data import DatasetInfo, structure_to_data
from zoo.models import build_model
from zoo.physics.basis import OrbitalLayout, get_basis

LAYOUT = OrbitalLayout(get_basis("szv-molopt-sr"), [8, 72])


@pytest.mark.parametrize("name,hp", [("sk", {}), ("escn", {"num_layers": 2, "sphere_channels": 4,
                                                            "ffn_hidden_channels": 8, "edge_channels": 8})])
def test_streamed_prediction_equals_single_pass(name, hp):
    torch.manual_seed(0)
    model = build_model(name, DatasetInfo(LAYOUT, 3.5), **hp).double().eval()
    st = Structure.from_ase(tiny_hfo2(1, reps=(3, 1, 1)))
    data = structure_to_data(st, LAYOUT, 3.5, torch.float64)
    full_n, full_e = predict_blocks(model, data.clone(), max_atoms_per_part=10_000)
    part_n, part_e = predict_blocks(model, data.clone(), max_atoms_per_part=12)  # 3 partitions
    torch.testing.assert_close(part_n, full_n, atol=1e-10, rtol=0)
    torch.testing.assert_close(part_e, full_e, atol=1e-10, rtol=0)
    assert full_e.abs().max() > 1e-6
