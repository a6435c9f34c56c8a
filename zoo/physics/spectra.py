"""Spectra of assembled H (with S): generalized eigenproblem, Fermi level, gap, DOS.

Dense `scipy.linalg.eigh` for small systems; sparse shift-invert (`eigsh`, sigma = energy)
for the states nearest an energy in large ones. Energies in Hartree. Spin-unpolarised
matrices hold two electrons per state unless `spin_degeneracy=1` (spinful 2n x 2n matrices).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.optimize import brentq

from zoo.errors import ZooError


def _dense(m):
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def eigh(h, s=None, vectors: bool = False):
    """All eigenvalues (and vectors) of H c = e S c; H (and S) dense or sparse, hermitian."""
    H = _dense(h)
    S = None if s is None else _dense(s)
    try:
        if vectors:
            return sla.eigh(H, S)
        return sla.eigh(H, S, eigvals_only=True)
    except np.linalg.LinAlgError as exc:
        raise ZooError(f"generalized eigenproblem failed (is S positive definite?): {exc}") from None


def eigh_near(h, s=None, sigma: float = 0.0, k: int = 20):
    """The k eigenvalues nearest `sigma` by sparse shift-invert, sorted ascending."""
    H = sp.csc_matrix(h)
    S = None if s is None else sp.csc_matrix(s)
    k = min(k, H.shape[0] - 2)
    vals = spla.eigsh(H, k=k, M=S, sigma=sigma, which="LM", return_eigenvectors=False)
    return np.sort(vals.real)


def n_occupied(n_electrons: float, spin_degeneracy: int = 2) -> float:
    return n_electrons / spin_degeneracy


def fermi_level(eigs: np.ndarray, n_electrons: float, kT: float = 0.0, spin_degeneracy: int = 2,
                weights: np.ndarray | None = None) -> float:
    """Fermi level. kT = 0: mid-gap between HOMO and LUMO (insulators); kT > 0: Fermi-Dirac root.

    `eigs` may be [n_states] or [n_k, n_states] with k-point `weights` summing to 1.
    """
    e = np.atleast_2d(np.asarray(eigs, dtype=np.float64))
    w = np.full(e.shape[0], 1.0 / e.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if n_electrons <= 0 or n_electrons > spin_degeneracy * e.shape[1]:
        raise ZooError(f"{n_electrons} electrons do not fit in {e.shape[1]} states")
    if kT <= 0:
        flat = np.sort(e.reshape(-1))
        n_occ = int(round(n_electrons / spin_degeneracy * e.shape[0]))
        homo = flat[n_occ - 1]
        lumo = flat[n_occ] if n_occ < flat.size else homo
        return 0.5 * (homo + lumo)

    def excess(mu):
        x = np.clip((e - mu) / kT, -200, 200)
        return spin_degeneracy * float((w[:, None] / (1 + np.exp(x))).sum()) - n_electrons

    return brentq(excess, e.min() - 50 * kT - 1, e.max() + 50 * kT + 1, xtol=1e-12)


def band_gap(eigs: np.ndarray, n_electrons: float, spin_degeneracy: int = 2) -> float:
    """LUMO - HOMO at zero temperature (0 for metals / partially filled levels)."""
    flat = np.sort(np.asarray(eigs, dtype=np.float64).reshape(-1))
    nk = 1 if np.ndim(eigs) == 1 else np.shape(eigs)[0]
    n_occ = int(round(n_electrons / spin_degeneracy * nk))
    if n_occ <= 0 or n_occ >= flat.size:
        raise ZooError(f"cannot find a gap with {n_occ} occupied of {flat.size} states")
    return max(0.0, float(flat[n_occ] - flat[n_occ - 1]))


def dos(eigs: np.ndarray, energies: np.ndarray, sigma: float = 0.005, spin_degeneracy: int = 2,
        weights: np.ndarray | None = None) -> np.ndarray:
    """Gaussian-broadened density of states (states per Hartree) on `energies`."""
    e = np.atleast_2d(np.asarray(eigs, dtype=np.float64))
    w = np.full(e.shape[0], 1.0 / e.shape[0]) if weights is None else np.asarray(weights)
    x = (np.asarray(energies)[:, None, None] - e[None]) / sigma
    g = np.exp(-0.5 * x * x) / (sigma * np.sqrt(2 * np.pi))
    return spin_degeneracy * (g * w[None, :, None]).sum(axis=(1, 2))
