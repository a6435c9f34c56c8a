"""Differentiable spectra in torch: dense H(k), S(k) of one structure, generalized eigenvalues, k-points.

The torch twin of `zoo.physics.assembly` + `zoo.physics.spectra` for training-time use (band-energy
loss terms): everything is differentiable, runs on the blocks' device (CPU or CUDA) and in their dtype
(float32/float64 real spinless blocks, complex64/complex128 spinful ones).

Conventions (the same as `assembly.assemble`, docs/adr/0004):

- input blocks are *padded*: node blocks [N, m, m], edge blocks [E, m, m] with m = n_max (spinless) or
  2 n_max (spinful, spin-major quadrants each in the spinless slot layout, docs/adr/0006); `orb_mask`
  [N, m] marks real orbitals (a spinless [N, n_max] mask is doubled for spinful blocks);
- edge e = (i, j, R) couples orbital a of atom i in the home cell with orbital b of atom j in the cell
  shifted by the integer lattice vector R = edge_shift[e]; with k in reduced (fractional) coordinates

      H_ab(k) = sum_R H_ab(R) exp(2 pi i k . R)       (several images of one pair are summed);

- padding is dropped: atom a's orbitals occupy rows off[a] .. off[a+1]-1 of the dense matrix, in slot
  order by default or in basis order when `orbital_rank` is given (`basis_order_rank`), which makes the
  result entry-for-entry equal to `assembly.assemble` on the record's flat blocks;
- `hermitize` returns (H + H^dagger) / 2, as `Record.eigvalsh` does.

Generalized eigenvalues of H c = e S c come from the Cholesky factor S = L L^dagger:
e = eigvalsh(L^-1 H L^-dagger). An S(k) that is not positive definite is refused with a ZooError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.physics.basis import OrbitalLayout
from zoo.physics.spin import complex_dtype, spin_identity

__all__ = [
    "GraphSlice", "split_batch", "basis_order_rank", "orbital_index", "bloch_sum", "hermitize_matrix",
    "cholesky_overlap", "generalized_eigvalsh", "monkhorst_pack", "kgrid_size", "random_kpoints",
    "periodic_directions", "spinful_overlap_blocks",
]


# -- batches -> structures -------------------------------------------------------------------------

@dataclass(frozen=True)
class GraphSlice:
    """Node and edge ranges of one structure inside a (torch-geometric) batch."""

    index: int
    nodes: slice
    edges: slice
    name: str | None = None

    def local_edge_index(self, batch) -> torch.Tensor:
        """[2, E_g] edge_index of this structure with node numbers starting at 0."""
        return batch.edge_index[:, self.edges] - self.nodes.start


def split_batch(batch) -> list[GraphSlice]:
    """Per-structure node/edge ranges of a torch-geometric `Batch` (or one `Data`, a single slice).

    Nodes of graph g are `batch.ptr[g] .. batch.ptr[g+1]`; edges are grouped by graph in the same order
    (`Batch.from_data_list` concatenates them), which is checked, as is that no edge crosses graphs.
    """
    n_nodes = int(batch.num_nodes)
    n_edges = int(batch.edge_index.shape[1])
    names = getattr(batch, "name", None)
    node_graph = getattr(batch, "batch", None)
    if node_graph is None:
        name = names if isinstance(names, str) else (names[0] if isinstance(names, (list, tuple)) and names else None)
        return [GraphSlice(0, slice(0, n_nodes), slice(0, n_edges), name)]
    n_graphs = int(getattr(batch, "num_graphs", int(node_graph.max()) + 1 if n_nodes else 0))
    ptr = getattr(batch, "ptr", None)
    if ptr is None:
        ptr = torch.cat([node_graph.new_zeros(1), torch.cumsum(torch.bincount(node_graph, minlength=n_graphs), 0)])
    i, j = batch.edge_index
    edge_graph = node_graph[i]
    if n_edges and (bool((edge_graph != node_graph[j]).any()) or bool((edge_graph[1:] < edge_graph[:-1]).any())):
        raise ZooError("batch edges are not grouped by structure (or join two structures); "
                       "build batches with torch_geometric Batch.from_data_list")
    eptr = torch.cat([edge_graph.new_zeros(1), torch.cumsum(torch.bincount(edge_graph, minlength=n_graphs), 0)])
    ptr, eptr = ptr.tolist(), eptr.tolist()
    if not isinstance(names, (list, tuple)):
        names = [names] * n_graphs
    return [GraphSlice(g, slice(ptr[g], ptr[g + 1]), slice(eptr[g], eptr[g + 1]), names[g]) for g in range(n_graphs)]


# -- assembly -------------------------------------------------------------------------------------

def basis_order_rank(layout: OrbitalLayout, numbers: torch.Tensor) -> torch.Tensor:
    """long [N, n_max]: position of each padded orbital within its atom's basis order (-1 for padding).

    Pass it as `orbital_rank` to `bloch_sum` to get the orbital order of the flat record blocks (and of
    `assembly.assemble`); spectra do not depend on it.
    """
    table = np.full((max(layout.elements) + 1, layout.n_max), -1, dtype=np.int64)
    for z in layout.elements:
        table[z, layout.index[z]] = np.arange(len(layout.index[z]))
    return torch.as_tensor(table, device=numbers.device)[numbers.long()]


def _double_for_spin(x: torch.Tensor, width: int, what: str) -> torch.Tensor:
    """A spinless per-orbital table [N, n] widened to the spinful padded width 2n (spin-major)."""
    if x.shape[-1] == width:
        return x
    if 2 * x.shape[-1] == width:
        return torch.cat([x, x], dim=-1)
    raise ZooError(f"{what} has {x.shape[-1]} columns; blocks are {width} wide (expected {width} or {width // 2})")


def orbital_index(orb_mask: torch.Tensor, orbital_rank: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """(long [N, m] row of every padded orbital in the dense matrix, -1 for padding; total orbitals).

    Without `orbital_rank` an atom's orbitals keep their padded (slot) order. For spinful widths the
    rank is doubled as [rank, rank + n_a]: the up orbitals of an atom first, then its down orbitals.
    """
    mask = orb_mask.bool()
    n_atom = mask.sum(dim=1)
    offset = torch.cumsum(n_atom, 0) - n_atom
    if orbital_rank is None:
        rank = torch.cumsum(mask.long(), dim=1) - 1
    else:
        rank = orbital_rank.to(mask.device).long()
        if 2 * rank.shape[1] == mask.shape[1]:
            half = n_atom[:, None] // 2
            rank = torch.cat([rank, torch.where(rank >= 0, rank + half, rank)], dim=1)
        if rank.shape != mask.shape or bool(((rank >= 0) != mask).any()):
            raise ZooError("orbital_rank does not match the orbital mask (padding must have rank -1)")
    idx = torch.where(mask, offset[:, None] + rank, torch.full_like(rank, -1))
    return idx, int(n_atom.sum())




def bloch_sum(node_blocks: torch.Tensor, edge_blocks: torch.Tensor, edge_index: torch.Tensor,
              edge_shift: torch.Tensor, orb_mask: torch.Tensor, k: torch.Tensor | Sequence[float] | None = None,
              *, hermitize: bool = True, orbital_rank: torch.Tensor | None = None) -> torch.Tensor:
    """Dense H(k) of one structure from padded blocks; differentiable in the blocks.

    node_blocks [N, m, m], edge_blocks [E, m, m], edge_index [2, E] (row 0 = i, row 1 = j, atoms of
    this structure numbered from 0), edge_shift [E, 3] (integer image of j), orb_mask [N, m] (or
    [N, m/2] for spinful blocks). k: None (Gamma), [3] or [n_k, 3] reduced coordinates. Returns
    [n, n] (k None or [3]) or [n_k, n, n]; real when the blocks are real and every k is zero,
    complex otherwise.
    """
    m = node_blocks.shape[-1]
    mask = _double_for_spin(orb_mask.to(node_blocks.device), m, "orb_mask").bool()
    idx, n = orbital_index(mask, orbital_rank)
    single = k is None or torch.as_tensor(k).dim() == 1
    real_dtype = node_blocks.real.dtype
    kk = (torch.zeros(1, 3, dtype=real_dtype, device=node_blocks.device) if k is None
          else torch.as_tensor(k, dtype=real_dtype, device=node_blocks.device).reshape(-1, 3))
    n_k = kk.shape[0]

    i, j = edge_index[0].long(), edge_index[1].long()
    node_sel = mask[:, :, None] & mask[:, None, :]
    edge_sel = mask[i][:, :, None] & mask[j][:, None, :]
    rows = torch.cat([idx[:, :, None].expand(-1, m, m)[node_sel], idx[i][:, :, None].expand(-1, m, m)[edge_sel]])
    cols = torch.cat([idx[:, None, :].expand(-1, m, m)[node_sel], idx[j][:, None, :].expand(-1, m, m)[edge_sel]])
    lin = rows * n + cols
    v_node = node_blocks[node_sel]
    v_edge = edge_blocks[edge_sel]

    gamma = bool((kk == 0).all())
    if gamma:
        dtype = torch.promote_types(node_blocks.dtype, edge_blocks.dtype)
        vals = torch.cat([v_node.to(dtype), v_edge.to(dtype)])[None, :].expand(n_k, -1)
    else:
        dtype = complex_dtype(torch.promote_types(node_blocks.dtype, edge_blocks.dtype))
        # edge of every selected entry, to broadcast the per-edge phase onto its entries
        entry_edge = torch.arange(edge_blocks.shape[0], device=edge_blocks.device)
        entry_edge = entry_edge[:, None, None].expand(-1, m, m)[edge_sel]
        phase = torch.exp(2j * math.pi * (kk @ edge_shift.to(real_dtype).T))  # [n_k, E]
        vals = torch.cat([v_node.to(dtype)[None, :].expand(n_k, -1),
                          v_edge.to(dtype)[None, :] * phase[:, entry_edge]], dim=1)
    h = torch.zeros(n_k, n * n, dtype=dtype, device=node_blocks.device).index_add(1, lin, vals).reshape(n_k, n, n)
    if hermitize:
        h = hermitize_matrix(h)
    return h[0] if single else h


def hermitize_matrix(m: torch.Tensor) -> torch.Tensor:
    """(M + M^dagger) / 2 over the last two dimensions."""
    return 0.5 * (m + m.mH)


def spinful_overlap_blocks(s_blocks: torch.Tensor) -> torch.Tensor:
    """Spinless padded S blocks [B, n, n] -> spinful [B, 2n, 2n] = [[S, 0], [0, S]] (S is spin-diagonal)."""
    return spin_identity(s_blocks)


# -- generalized eigenproblem ---------------------------------------------------------------------

def cholesky_overlap(s: torch.Tensor, name: str | None = None) -> torch.Tensor:
    """Lower Cholesky factor L of S = L L^dagger ([..., n, n]); ZooError when S is not positive definite.

    `name` (dataset / structure) is put into the message.
    """
    s = hermitize_matrix(s)
    L, info = torch.linalg.cholesky_ex(s)
    if bool((info != 0).any()):
        with torch.no_grad():
            lowest = float(torch.linalg.eigvalsh(s).min())
        where = f" of {name}" if name else ""
        raise ZooError(f"the overlap S(k){where} is not positive definite (lowest eigenvalue {lowest:.3g}), so "
                       "the generalized eigenproblem H c = e S c has no solution; S assembled from blocks "
                       "truncated at the cutoff can be indefinite (see docs/datasets.md, truncation)")
    return L


def generalized_eigvalsh(h: torch.Tensor, s: torch.Tensor | None = None, *, factor: torch.Tensor | None = None,
                         name: str | None = None) -> torch.Tensor:
    """Ascending eigenvalues of H c = e S c ([..., n, n] -> [..., n]), differentiable in H (and S).

    With S = L L^dagger (Cholesky; pass `factor` = L to reuse one), e = eigvalsh(L^-1 H L^-dagger);
    without S (and `factor`), the orthonormal-basis eigenvalues of H. H is taken as hermitian
    (hermitize it first, as `bloch_sum(..., hermitize=True)` does).
    """
    if s is None and factor is None:
        return torch.linalg.eigvalsh(hermitize_matrix(h))
    L = factor if factor is not None else cholesky_overlap(s, name=name)
    dtype = torch.promote_types(h.dtype, L.dtype)
    h, L = h.to(dtype), L.to(dtype)
    x = torch.linalg.solve_triangular(L, h, upper=False)  # L^-1 H
    a = torch.linalg.solve_triangular(L, x.mH, upper=False)  # L^-1 (L^-1 H)^dagger = L^-1 H L^-dagger (H = H^dagger)
    return torch.linalg.eigvalsh(hermitize_matrix(a))


# -- k-points -------------------------------------------------------------------------------------

def _pbc3(pbc) -> torch.Tensor:
    p = torch.as_tensor(pbc, dtype=torch.bool).reshape(-1).cpu()
    if p.numel() == 1:
        p = p.expand(3)
    if p.numel() != 3:
        raise ZooError(f"pbc must hold 3 flags, got {p.numel()}")
    return p


def monkhorst_pack(size: Sequence[int], pbc=(True, True, True), *, gamma_centered: bool = False,
                   dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """[n1 n2 n3, 3] reduced k-points of an n1 x n2 x n3 grid; one point (k = 0) along non-periodic axes.

    Monkhorst-Pack: k_r = (2r - n - 1) / (2n), r = 1..n (symmetric about Gamma, which it holds only
    for odd n); `gamma_centered`: k_r = r / n, r = 0..n-1, folded into (-1/2, 1/2].
    """
    p = _pbc3(pbc)
    axes = []
    for d in range(3):
        n = int(size[d]) if p[d] else 1
        if n < 1:
            raise ZooError(f"k-point grid size must be >= 1 along every axis, got {tuple(size)}")
        r = torch.arange(n, dtype=torch.float64)
        if gamma_centered:
            x = r / n
            x = torch.where(x > 0.5, x - 1.0, x)
        else:
            x = (2 * (r + 1) - n - 1) / (2 * n)
        axes.append(x)
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid.to(dtype=dtype, device=device)


def kgrid_size(cell, pbc, density: float) -> tuple[int, int, int]:
    """Grid size with at least `density` k-points per reciprocal length 2 pi / A along each periodic axis.

    n_d = max(1, ceil(2 pi |b_d| density)) with b = (cell^-1)^T (rows: reciprocal vectors without 2 pi,
    cell rows are lattice vectors in Angstrom); n_d = 1 along non-periodic axes.
    """
    p = _pbc3(pbc)
    c = np.asarray(torch.as_tensor(cell).detach().cpu().double().reshape(3, 3))
    out = []
    for d in range(3):
        if not p[d]:
            out.append(1)
            continue
        b = np.linalg.inv(c).T[d]
        out.append(max(1, int(math.ceil(2 * math.pi * np.linalg.norm(b) * density - 1e-9))))
    return tuple(out)


def random_kpoints(n_k: int, pbc, generator: torch.Generator | None = None, *,
                   dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """[n_k, 3] reduced k-points uniform in [-1/2, 1/2) along periodic axes, 0 along the others.

    A structure with no periodic axis has one k-point, Gamma ([1, 3] zeros), whatever n_k. Draws
    come from `generator` (on its device; seed it for reproducibility), then move to `device`.
    """
    p = _pbc3(pbc)
    if not bool(p.any()):
        return torch.zeros(1, 3, dtype=dtype, device=device)
    if n_k < 1:
        raise ZooError(f"n_k must be >= 1, got {n_k}")
    gen_device = generator.device if generator is not None else "cpu"
    k = torch.rand(n_k, 3, generator=generator, dtype=torch.float64, device=gen_device) - 0.5
    k = k * p.to(gen_device, torch.float64)
    return k.to(dtype=dtype, device=device)


def periodic_directions(batch, piece: GraphSlice | None = None) -> torch.Tensor:
    """bool [3]: the axes along which a structure's H(k) depends on k.

    From `batch.pbc` when the graph carries it; otherwise inferred from the edges: an axis counts as
    periodic when some edge has a non-zero image shift along it (along any other axis H(k) is constant,
    so sampling k there would only repeat the same eigenvalues). Molecules therefore give no axis.
    """
    pbc = getattr(batch, "pbc", None)
    if pbc is not None:
        pbc = torch.as_tensor(pbc).reshape(-1, 3)
        return pbc[piece.index if piece is not None and pbc.shape[0] > 1 else 0].bool().cpu()
    shift = batch.edge_shift if piece is None else batch.edge_shift[piece.edges]
    if shift.numel() == 0:
        return torch.zeros(3, dtype=torch.bool)
    return (shift != 0).any(dim=0).cpu()
