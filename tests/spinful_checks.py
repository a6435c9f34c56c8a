"""Checks shared by the spinful engine tests (soc-mini's GHF, soc-molecules' GKS)."""

from __future__ import annotations

import numpy as np

from zoo.data.format import Record
from zoo.physics.spin import time_reverse


def assert_hermitian_and_time_reversal_symmetric(rec: Record, tr_tol: float = 1e-7, herm_tol: float = 1e-12) -> None:
    """Every stored H block is time-reversal symmetric, on-site blocks are hermitian and every edge
    block is the conjugate transpose of its reverse edge (H_ji = H_ij^dagger)."""
    assert rec.spinful and np.iscomplexobj(rec.h_onsite)
    blocks = rec.onsite_blocks() + rec.edge_blocks()
    assert max(np.abs(time_reverse(b) - b).max() for b in blocks) < tr_tol
    for b in rec.onsite_blocks():
        assert np.abs(b - b.conj().T).max() < herm_tol
    pos = {(int(i), int(j)): e for e, (i, j) in enumerate(rec.edge_index)}
    eb = rec.edge_blocks()
    for (i, j), e in pos.items():
        assert np.abs(eb[pos[(j, i)]] - eb[e].conj().T).max() < herm_tol
