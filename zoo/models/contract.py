"""The backbone contract.

    Backbone(info: DatasetInfo, **hparams) ; forward(batch) -> Prediction(node_blocks, edge_blocks)

node_blocks [N, n_max, n_max] and edge_blocks [E, n_max, n_max] are H blocks in the global
frame, internal orbital convention, Hartree, padded in the slot layout of `info.layout`
(padding entries are ignored by the harness). Block e belongs to edge (i, j, shift) of
`batch.edge_index` / `batch.edge_shift`. Spinful backbones return complex (2n x 2n) blocks.
A backbone sets `message_passing_layers` so partitioners can build a halo deep enough for
exact partitioned inference; it never reads files.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from zoo.data.torch_data import DatasetInfo


class Prediction(NamedTuple):
    node_blocks: torch.Tensor
    edge_blocks: torch.Tensor


class Backbone(torch.nn.Module):
    #: hops of neighbourhood a prediction depends on (halo depth for exact partitioning)
    message_passing_layers: int = 0
    #: direction messages travel along edge_index, as in torch-geometric: "source_to_target" (row 0 -> row 1,
    #: summed at row 1) or "target_to_source"; one-way partition halos are built for it
    message_flow: str = "source_to_target"
    #: True: returns complex (2n x 2n) blocks in the spinful layout (docs/adr/0006); False: refuses spinful data
    spinful: bool = False
    #: True if the raw output is hermitian by construction (H_ii = H_ii^dagger, H_ji(-R) = H_ij(R)^dagger);
    #: the contract test holds such a backbone to 1e-10. Others are hermitized by the harness.
    hermitian: bool = False

    def __init__(self, info: DatasetInfo):
        super().__init__()
        self.info = info

    def forward(self, batch) -> Prediction:
        raise NotImplementedError  # abstract: every backbone defines forward

    # -- optional hooks (defaults: the harness's behaviour) ------------------------------------
    def loss_terms(self, pred: Prediction, batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A model-owned loss as (sum, count) over this batch; the loss is `loss_outer(sum / count)`.

        Keeping sum and count apart lets DDP normalise by the global count (exact gradients).
        Return None (the default) to use the harness's masked loss from the preset's `train:`.
        """
        return None

    def loss_outer(self, m: torch.Tensor) -> torch.Tensor:
        """f(m) applied to the global mean m = sum / count of `loss_terms` (default: identity)."""
        return m

    def prepare(self, train_graphs) -> None:
        """Fit statistics from the training graphs once, before training (not on resume).

        Whatever it fits must live in registered buffers or parameters, so that it is saved in
        the checkpoint's state_dict and restored with it. Default: nothing.
        """
        return None


def reverse_edges(edge_index: torch.Tensor, edge_shift: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """[E] index of edge (j, i, -shift) for every edge (i, j, shift), or -1 where it is absent."""
    i, j = edge_index
    s = edge_shift.round().long()
    span = int(s.abs().max().item()) + 1 if s.numel() else 1
    base = 2 * span + 1

    def key(a, b, sh):
        k = a * n_nodes + b
        for d in range(3):
            k = k * base + (sh[:, d] + span)
        return k

    fwd = key(i, j, s)
    rev = key(j, i, -s)
    order = torch.argsort(fwd)
    pos = torch.searchsorted(fwd[order], rev).clamp(max=max(len(fwd) - 1, 0))
    found = fwd[order][pos] == rev if len(fwd) else torch.zeros(0, dtype=torch.bool)
    return torch.where(found, order[pos], torch.full_like(pos, -1))


def symmetrize_prediction(pred: Prediction, batch) -> Prediction:
    """Hermitize: H_ii <- (H_ii + H_ii^T)/2; H_ij(R) <- (H_ij(R) + H_ji(-R)^T)/2 where both exist."""
    node = 0.5 * (pred.node_blocks + pred.node_blocks.transpose(-1, -2).conj())
    rev = reverse_edges(batch.edge_index, batch.edge_shift, batch.num_nodes)
    edge = pred.edge_blocks
    has = rev >= 0
    partner = edge[rev.clamp(min=0)].transpose(-1, -2).conj()
    edge = torch.where(has[:, None, None], 0.5 * (edge + partner), edge)
    return Prediction(node, edge)
