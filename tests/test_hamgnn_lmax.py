"""`lmax: auto` of hamgnn / hamgnn-soc (issue 15): the smallest lmax the dataset's basis needs.

2 l_max for the spinless network and the so3 spin-orbit head (the coupled L of two l_max shells), 2 l_max + 1
for the su2 head (the spin vector couples to L = 2 l_max); an explicit lmax that is too small stays an error.
Tiny networks (one channel, one convolution): seconds.
"""

import pytest

from zoo.data.torch_data import DatasetInfo
from zoo.errors import ConfigError
from zoo.models.hamgnn import HamGNN, HamGNNSOC
from zoo.models.registry import build_model
from zoo.physics.basis import BasisSet, OrbitalLayout, get_basis

TINY = dict(num_features=1, num_layers=1, radial_hidden=2, sh_lmax=1)
#: d shells (Hf) and an f shell (Bi), as in gfn1-xtb and the all-electron DZP-DKH of soc-molecules
D_LAYOUT = OrbitalLayout(get_basis("gfn1-xtb"), [8, 72])
F_LAYOUT = OrbitalLayout(BasisSet("toy-f", {1: (0,), 83: (0, 1, 2, 3)}), [1, 83])


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_auto_is_four_for_d_shells_and_builds_the_same_network():
    info = DatasetInfo(D_LAYOUT, 4.0, name="d")
    auto, four = HamGNN(info, lmax="auto", **TINY), HamGNN(info, lmax=4, **TINY)
    assert auto.lmax == four.lmax == 4
    assert {k: v.shape for k, v in auto.state_dict().items()} == {k: v.shape for k, v in four.state_dict().items()}
    assert build_model("hamgnn", info, lmax="auto", **TINY).lmax == 4  # through the registry, as --set lmax=auto


def test_auto_follows_the_basis_and_the_soc_head():
    spinless = DatasetInfo(F_LAYOUT, 4.0, name="f")
    spinful = DatasetInfo(F_LAYOUT, 4.0, spinful=True, name="f-soc")
    assert HamGNN(spinless, lmax="auto", **TINY).lmax == 6
    assert HamGNNSOC(spinful, lmax="auto", **TINY).lmax == 6
    su2 = HamGNNSOC(spinful, lmax="auto", soc_head="su2", **TINY)
    assert su2.lmax == 7 and max(ir.l for _, ir in su2.features) == 7
    assert HamGNNSOC(DatasetInfo(D_LAYOUT, 4.0, spinful=True), lmax="auto", soc_head="su2", **TINY).lmax == 5


def test_explicit_lmax_too_small_is_still_an_error():
    spinful = DatasetInfo(F_LAYOUT, 4.0, spinful=True, name="f-soc")
    with pytest.raises(ConfigError, match="lmax=4 .* L=6 .* lmax >= 6"):
        HamGNNSOC(spinful, lmax=4, **TINY)
    with pytest.raises(ConfigError, match="lmax=6 .* lmax >= 7"):
        HamGNNSOC(spinful, lmax=6, soc_head="su2", **TINY)
    with pytest.raises(ConfigError, match="non-negative integer or auto, got 'max'"):
        HamGNN(DatasetInfo(D_LAYOUT, 4.0), lmax="max", **TINY)
