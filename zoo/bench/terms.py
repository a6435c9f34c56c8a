"""Extra loss terms a training stage may add (`extra:` in a preset's stages, see zoo.bench.stages).

Every term is a callable

    term(model, pred, batch, info, **params) -> (sum, count)

whose value is sum / count; sum is a differentiable scalar tensor and count a tensor of the same dtype
and device (0 when the batch holds nothing the term measures). Keeping them apart lets DDP add the
sums and counts of all ranks before dividing, so the distributed gradient equals the single-process
one. `pred` must be in Hartree (un-standardized), like the targets `batch.y_node` / `batch.y_edge`.

Terms:

band_energy (HamGNN's band-energy regulariser)
    mean |eps_pred - eps_ref| (Hartree) over eigenvalues eps of H(k) c = eps S(k) c at `n_k` random
    k-points per structure (Gamma only for structures without periodic axes) and within `window_ev`
    of the Fermi level E_F, both spectra sorted ascending and paired by index. E_F is taken from the
    reference spectrum at the sampled k-points: the zero-temperature mid-gap level
    (`zoo.physics.spectra.fermi_level`) when the batch carries the structure's electron count
    (`batch.n_electrons`, spin degeneracy 2 spinless, 1 spinful), otherwise the median of the
    reference eigenvalues (the half-filling level). The window and E_F come from the reference only,
    so the selection is a fixed mask and the term is differentiable in the prediction.
    S comes from the batch (`s_node`, `s_edge`); data without S use an orthonormal basis (S = 1).
    A stage using it must train on whole structures (`data: full`): a partition's blocks do not make
    a spectrum. An S(k) that is not positive definite (the tblite sets truncated at the cutoff) is
    refused with a ZooError naming the dataset, never replaced by something else.
    Params: n_k (4), window_ev (5.0), seed (0) or generator (a torch.Generator; draws continue from
    it, so a caller that keeps one gets fresh k-points every step; with `seed` alone every call draws
    the same k-points), float64 (True: spectra in double precision, gradients flow back to the
    prediction's dtype).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import torch

from zoo.errors import ConfigError, ZooError
from zoo.physics import spectra
from zoo.physics.torch_spectra import (
    bloch_sum, cholesky_overlap, generalized_eigvalsh, periodic_directions, random_kpoints, spinful_overlap_blocks,
    split_batch,
)
from zoo.physics.units import HARTREE_EV

__all__ = ["EXTRA_TERMS", "band_energy", "check_term_params"]


def _n_electrons(batch, index: int) -> float | None:
    """The electron count of structure `index` when the batch carries one (tensor, list or number)."""
    n = getattr(batch, "n_electrons", None)
    if n is None:
        return None
    if isinstance(n, torch.Tensor):
        flat = n.reshape(-1)
        n = flat[index if flat.numel() > 1 else 0].item()
    elif isinstance(n, (list, tuple)):
        n = n[index]
    if n is None:
        return None
    n = float(n)
    return n if n == n and n > 0 else None  # NaN or 0 mean "unknown"


def _require_whole_structures(batch, info) -> None:
    for what in ("node_label_mask", "edge_label_mask"):
        m = getattr(batch, what, None)
        if m is not None and m.numel() and not bool(m.all()):
            raise ConfigError(
                f"band_energy on dataset {info.name!r}: the batch is a partition ({what} is not all true), "
                "and a partition's blocks cannot give a spectrum; the stage that uses this term must set "
                "`data: full`")


def band_energy(model, pred, batch, info, *, n_k: int = 4, window_ev: float = 5.0, seed: int = 0,
                generator: torch.Generator | None = None, float64: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum |eps_pred - eps_ref| over window eigenvalues and k-points, their count); see the module doc."""
    if isinstance(n_k, bool) or not isinstance(n_k, int) or n_k < 1:
        raise ConfigError(f"band_energy: n_k must be a positive integer, got {n_k!r}")
    if isinstance(window_ev, bool) or not isinstance(window_ev, (int, float)) or not window_ev > 0:
        raise ConfigError(f"band_energy: window_ev must be a positive number, got {window_ev!r}")
    _require_whole_structures(batch, info)
    node, edge = pred.node_blocks, pred.edge_blocks
    spinful = bool(getattr(info, "spinful", False)) or node.is_complex()
    spin_degeneracy = 1 if spinful else 2
    has_s = getattr(batch, "s_node", None) is not None
    if getattr(info, "has_overlap", False) and not has_s:
        raise ZooError(f"band_energy on dataset {info.name!r}: the dataset has an overlap S but the batch "
                       "carries no s_node / s_edge")
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    real = torch.float64 if float64 else node.real.dtype

    def cast(x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.complex128 if x.is_complex() else torch.float64) if float64 else x

    total = node.real.new_zeros((), dtype=real)
    count = 0
    window = float(window_ev) / HARTREE_EV
    for piece in split_batch(batch):
        nodes, edges = piece.nodes, piece.edges
        ei = piece.local_edge_index(batch)
        shift = batch.edge_shift[edges]
        mask = batch.node_orb_mask[nodes]
        k = random_kpoints(n_k, periodic_directions(batch, piece), generator, dtype=real, device=node.device)
        where = f"dataset {info.name!r}, structure {piece.name!r}" if piece.name else f"dataset {info.name!r}"
        h_pred = bloch_sum(cast(node[nodes]), cast(edge[edges]), ei, shift, mask, k)
        with torch.no_grad():
            h_ref = bloch_sum(cast(batch.y_node[nodes]), cast(batch.y_edge[edges]), ei, shift, mask, k)
            factor = None
            if has_s:
                s_node, s_edge = batch.s_node[nodes], batch.s_edge[edges]
                if s_node.shape[-1] * 2 == node.shape[-1]:  # spinless S of spinful data: S (x) 1_spin
                    s_node, s_edge = spinful_overlap_blocks(s_node), spinful_overlap_blocks(s_edge)
                s_k = bloch_sum(cast(s_node), cast(s_edge), ei, shift, mask, k)
                factor = cholesky_overlap(s_k, name=where)
            e_ref = generalized_eigvalsh(h_ref, factor=factor)  # [n_k, n]
            n_e = _n_electrons(batch, piece.index)
            if n_e is not None:
                ef = spectra.fermi_level(e_ref.detach().cpu().double().numpy(), n_e, spin_degeneracy=spin_degeneracy)
            else:
                ef = float(e_ref.median())
            sel = (e_ref - ef).abs() <= window
        # the factor L is a constant of the prediction (S is data), so gradients flow through H only
        e_pred = generalized_eigvalsh(h_pred, factor=factor)
        total = total + (e_pred - e_ref).abs()[sel].sum()
        count += int(sel.sum())
    out_dtype = node.real.dtype
    return total.to(out_dtype), torch.as_tensor(float(count), dtype=out_dtype, device=total.device)


#: name -> term(model, pred, batch, info, **params) -> (sum, count)
EXTRA_TERMS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {"band_energy": band_energy}


def check_term_params(name: str, params: Mapping[str, Any], where: str = "extra") -> None:
    """ConfigError for an unknown term or a parameter its callable does not take (strict presets)."""
    if name not in EXTRA_TERMS:
        raise ConfigError(f"{where}: unknown extra term {name!r}; known: {sorted(EXTRA_TERMS)}")
    sig = inspect.signature(EXTRA_TERMS[name])
    allowed = [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: extra term {name!r} has no parameter(s) {unknown}; it takes {allowed}")
