"""The `mean` calibration baseline: what "node MAE" and "edge MAE" mean for a dataset.

On-site block of an atom of element Z:

    H_ii = WE^-1( c_Z ),   c_Z[k] = < WE(H_jj)[k] >_{j in train, Z_j = Z}   for the L = 0 irreps k,

i.e. the Wigner-Eckart (coupled) coefficients of every on-site block, averaged over the
labelled training atoms of the same element, keeping only the rotation-invariant L = 0 irreps
(those of shell pairs with l_a = l_b, each a multiple of the identity in m). Because the coupling
map is orthonormal, c_Z is the least-squares best prediction of the on-site blocks of element Z
among all rotation-invariant, environment-free ones. Off-site blocks are zero, so the edge MAE of
this model is the mean |H_ij| of the test set: the error of predicting nothing.

On spinful data (docs/adr/0006) the blocks averaged are the spin-independent parts Re (uu + dd) / 2 and
the prediction is kron(I2, WE^-1(c_Z)): no spin-orbit term, hermitian, SU(2)-covariant and time-reversal
even (`zoo.models.mean.invariant`, the fit shared with learned backbones' on-site priors).

The means are `nn.Parameter`s that `prepare(train_graphs)` fills (the contract-v2 hook, called
once before training). The harness may then train them like any model; under the MSE loss the
fitted means are already the optimum, so training is a no-op refinement (its presets train for
a couple of epochs at a tiny learning rate). With no prepare call, the means start at zero.
"""

from __future__ import annotations

from typing import Iterable

import torch

from zoo.data.graph import species_index
from zoo.data.torch_data import DatasetInfo
from zoo.models.contract import Backbone, Prediction
from zoo.models.mean.invariant import fit_invariant_means, invariant_blocks, scalar_slots, symmetric_means
from zoo.models.registry import register_model
from zoo.physics.coupling import WignerEckart
from zoo.physics.spin import complex_dtype, spin_identity


@register_model("mean")
class MeanOnsite(Backbone):
    """Per-element mean of the invariant (L = 0) part of the on-site blocks; off-site zero."""

    message_passing_layers = 0
    # on-site blocks are sums of c * identity over same-l shell pairs with c_ab = c_ba by construction
    # (see symmetric_means), and zero off-site blocks are trivially hermitian
    hermitian = True
    #: off-site blocks are identically zero by design (a contract test's "edges are non-trivial" check
    #: does not apply to this baseline)
    zero_offsite = True
    #: no spin dependence: real blocks on spinless data, kron(I2, .) on spinful data (the instance's
    #: `spinful` follows the dataset)
    spin_independent = True

    def __init__(self, info: DatasetInfo):
        super().__init__(info)
        self.spinful = bool(info.spinful)
        self.we = WignerEckart(info.layout)
        elements = list(info.elements)
        self.register_buffer("z_index", torch.as_tensor(species_index(elements)), persistent=False)
        scalar, partner = scalar_slots(self.we)
        self.register_buffer("scalar_idx", scalar, persistent=False)
        self.register_buffer("partner", partner, persistent=False)
        self.means = torch.nn.Parameter(torch.zeros(len(elements), len(scalar)))
        #: labelled training atoms per element that `prepare` averaged over (0: element unseen, mean 0)
        self.register_buffer("n_fitted", torch.zeros(len(elements), dtype=torch.long))

    @torch.no_grad()
    def prepare(self, train_graphs: Iterable) -> None:
        """Set the means from the labelled on-site blocks of the training graphs (virtual halo atoms skipped)."""
        mean, count = fit_invariant_means(train_graphs, self.we, self.scalar_idx, self.z_index, "mean.prepare")
        self.means.copy_(mean.to(self.means.dtype))
        self.n_fitted.copy_(count)

    def forward(self, batch) -> Prediction:
        c = symmetric_means(self.means, self.partner)[self.z_index[batch.z]]
        node = invariant_blocks(self.we, self.scalar_idx, c)
        if self.spinful:
            node = spin_identity(node.to(complex_dtype(node.dtype)))
        n = node.shape[-1]
        edge = node.new_zeros(batch.edge_index.shape[1], n, n)
        return Prediction(node, edge)
