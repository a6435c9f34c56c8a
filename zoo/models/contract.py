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
    #: True: returns complex (2n x 2n) blocks in the spinful layout (docs/adr/0006); False: spinless
    #: (refuses spinful data unless `spin_independent`)
    spinful: bool = False
    #: True for a backbone with no spin dependence that accepts both kinds of data: real blocks on spinless
    #: data, kron(I2, H0) in the spinful layout on spinful data (its instance's `spinful` follows the dataset)
    spin_independent: bool = False
    #: True if the raw output is hermitian by construction (H_ii = H_ii^dagger, H_ji(-R) = H_ij(R)^dagger);
    #: the contract test holds such a backbone to 1e-10. Others are hermitized by the harness.
    hermitian: bool = False
    #: False for a backbone that is equivariant under proper rotations only (e.g. right-handed local
    #: frames): the contract test then measures and prints the rotoinversion error instead of asserting it
    parity_equivariant: bool = True

    def __init__(self, info: DatasetInfo):
        super().__init__()
        self.info = info

    def forward(self, batch) -> Prediction:
        raise NotImplementedError  # abstract: every backbone defines forward

    # -- optional hooks (defaults: the harness's behaviour) ------------------------------------
    def loss_terms(self, pred: Prediction, batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A model-owned loss as (sum, count) over this batch; the loss is `loss_outer(sum / count)`.

        sum and count may be scalars or vectors of K components (e.g. [on-site, off-site]); then
        `loss_outer` receives the K means and returns one scalar.

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


def reverse_edges(edge_index: torch.Tensor, edge_shift: torch.Tensor, n_nodes: int | None = None) -> torch.Tensor:
    """[E] index of edge (j, i, -shift) for every edge (i, j, shift), or -1 where it is absent.

    The torch face of `zoo.data.graph.reverse_edge_index` (one implementation): edge_index is
    torch-geometric's [2, E]; the result is a long tensor on edge_index's device. `n_nodes` is
    accepted for compatibility and not needed.
    """
    from zoo.data.graph import reverse_edge_index

    rev = reverse_edge_index(edge_index.detach().T.cpu().numpy(), edge_shift.detach().cpu().numpy())
    return torch.from_numpy(rev).to(edge_index.device)


def symmetrize_prediction(pred: Prediction, batch) -> Prediction:
    """Hermitize: H_ii <- (H_ii + H_ii^T)/2; H_ij(R) <- (H_ij(R) + H_ji(-R)^T)/2 where both exist."""
    node = 0.5 * (pred.node_blocks + pred.node_blocks.transpose(-1, -2).conj())
    rev = reverse_edges(batch.edge_index, batch.edge_shift, batch.num_nodes)
    edge = pred.edge_blocks
    has = rev >= 0
    partner = edge[rev.clamp(min=0)].transpose(-1, -2).conj()
    edge = torch.where(has[:, None, None], 0.5 * (edge + partner), edge)
    return Prediction(node, edge)


def hermiticity_error(pred: Prediction, batch, relative: bool = False) -> float:
    """The raw output's hermiticity defect, before any symmetrization.

        max( |H_ii - H_ii^dagger|,  |H_ij(R) - H_ji(-R)^dagger| )

    over real-orbital entries (the batch's orbital masks; padding is ignored) of every node and of
    every edge whose reverse (j, i, -R) is in the graph. Absolute, in the prediction's unit
    (Hartree); with `relative`, divided by the largest |H| entry over the same entries (the output
    scale). 0.0 for a graph without real entries.
    """
    from zoo.data.torch_data import block_masks

    node_m, edge_m = block_masks(batch)
    node, edge = pred.node_blocks.detach(), pred.edge_blocks.detach()
    d_node = (node - node.transpose(-1, -2).conj()).abs()[node_m]
    rev = reverse_edges(batch.edge_index, batch.edge_shift, batch.num_nodes)
    has = rev >= 0
    # edge e's mask covers (orbitals of i) x (orbitals of j); its partner's transpose has the same mask
    d_edge = (edge[has] - edge[rev[has]].transpose(-1, -2).conj()).abs()[edge_m[has]]
    diff = torch.cat([d_node.reshape(-1), d_edge.reshape(-1)])
    if diff.numel() == 0:
        return 0.0
    err = float(diff.max())
    if relative:
        scale = float(torch.cat([node.abs()[node_m].reshape(-1), edge.abs()[edge_m].reshape(-1)]).max())
        return err / scale if scale > 0 else err
    return err
