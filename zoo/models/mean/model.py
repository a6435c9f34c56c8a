"""The `mean` calibration baseline: what "node MAE" and "edge MAE" mean for a dataset.

On-site block of an atom of element Z:

    H_ii = WE^-1( c_Z ),   c_Z[k] = < WE(H_jj)[k] >_{j in train, Z_j = Z}   for the L = 0 irreps k,

i.e. the Wigner-Eckart (coupled) coefficients of every on-site block, averaged over the
labelled training atoms of the same element, keeping only the rotation-invariant L = 0 irreps
(those of shell pairs with l_a = l_b, each a multiple of the identity in m). Because the coupling
map is orthonormal, c_Z is the least-squares best prediction of the on-site blocks of element Z
among all rotation-invariant, environment-free ones. Off-site blocks are zero, so the edge MAE of
this model is the mean |H_ij| of the test set: the error of predicting nothing.

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
from zoo.errors import ModelError
from zoo.models.contract import Backbone, Prediction
from zoo.models.registry import register_model
from zoo.physics.coupling import WignerEckart


@register_model("mean")
class MeanOnsite(Backbone):
    """Per-element mean of the invariant (L = 0) part of the on-site blocks; off-site zero."""

    message_passing_layers = 0
    # on-site blocks are sums of c * identity over same-l shell pairs with c_ab = c_ba by construction
    # (see _symmetric), and zero off-site blocks are trivially hermitian
    hermitian = True
    #: off-site blocks are identically zero by design (a contract test's "edges are non-trivial" check
    #: does not apply to this baseline)
    zero_offsite = True

    def __init__(self, info: DatasetInfo):
        super().__init__(info)
        if info.spinful:
            raise ModelError("mean: spinful datasets are not supported (this baseline is spinless)")
        self.we = WignerEckart(info.layout)
        elements = list(info.elements)
        self.register_buffer("z_index", torch.as_tensor(species_index(elements)), persistent=False)
        # coefficient offsets of the L = 0 irreps (each one number) in the coupled vector
        scalar, offset = [], 0
        for _, ir in self.we.irreps:
            if ir.l == 0:
                scalar.append(offset)
            offset += ir.dim
        self.register_buffer("scalar_idx", torch.tensor(scalar, dtype=torch.long), persistent=False)
        # the scalar of slot pair (a, b) and that of its transpose partner (b, a) must carry the same mean
        pair_of = {k: ab for ab, sl in self.we.pair_slices.items() for k in range(sl.start, sl.stop)}
        partner = []
        for k in scalar:
            a, b = pair_of[k]
            partner.append(scalar.index(self.we.pair_slices[(b, a)].start + (k - self.we.pair_slices[(a, b)].start)))
        self.register_buffer("partner", torch.tensor(partner, dtype=torch.long), persistent=False)
        self.means = torch.nn.Parameter(torch.zeros(len(elements), len(scalar)))
        #: labelled training atoms per element that `prepare` averaged over (0: element unseen, mean 0)
        self.register_buffer("n_fitted", torch.zeros(len(elements), dtype=torch.long))

    def _symmetric(self) -> torch.Tensor:
        # c_ab and c_ba are the same number for a symmetric block; averaging keeps the output hermitian
        # whatever the parameters (the contract test perturbs them at random)
        return 0.5 * (self.means + self.means[:, self.partner])

    @torch.no_grad()
    def prepare(self, train_graphs: Iterable) -> None:
        """Set the means from the labelled on-site blocks of the training graphs (virtual halo atoms skipped)."""
        ne, ns = self.means.shape
        dev = self.means.device  # graphs arrive on the CPU; the coupling matrix lives with the model
        total = torch.zeros(ne, ns, dtype=torch.float64, device=dev)
        count = torch.zeros(ne, dtype=torch.float64, device=dev)
        seen = False
        for g in train_graphs:
            seen = True
            keep = g.node_label_mask.to(dev) if hasattr(g, "node_label_mask") else \
                torch.ones(g.num_nodes, dtype=torch.bool, device=dev)
            y = g.y_node.detach().to(device=dev, dtype=torch.float64)[keep]
            zi = self.z_index[g.z.to(dev)[keep]]
            if (zi < 0).any():
                raise ModelError(f"mean.prepare: graph {getattr(g, 'name', '?')!r} holds an element outside "
                                 f"the dataset's layout {list(self.info.elements)}")
            c = self.we.to_coupled(y)[:, self.scalar_idx]
            total.index_add_(0, zi, c)
            count.index_add_(0, zi, torch.ones_like(zi, dtype=torch.float64))
        if not seen:
            raise ModelError("mean.prepare: no training graphs")
        mean = total / count.clamp(min=1.0)[:, None]
        self.means.copy_(mean.to(self.means.dtype))
        self.n_fitted.copy_(count.long())

    def forward(self, batch) -> Prediction:
        zi = self.z_index[batch.z]
        c = self._symmetric()[zi]
        coupled = c.new_zeros(c.shape[0], self.we.irreps.dim)
        coupled[:, self.scalar_idx] = c
        node = self.we.to_blocks(coupled)
        n = node.shape[-1]
        edge = node.new_zeros(batch.edge_index.shape[1], n, n)
        return Prediction(node, edge)
