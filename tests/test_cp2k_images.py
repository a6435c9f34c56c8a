"""Mapping CP2K's per-image matrices onto zoo's edges, without the binary: CP2K's wrapping
window, its image table, and a synthetic k-point run written the way CP2K 2023.1 writes one
(the conventions themselves are measured on real runs in tests/test_engine_cp2k.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from zoo.data.engines import EngineError
from zoo.data.engines.base import orbital_reorder
from zoo.data.engines.cp2k_images import FACE_MARGIN, image_table, images_to_record, wrapped_positions
from zoo.data.format import Structure
from zoo.data.graph import edge_vectors_np
from zoo.physics.basis import get_basis

CELL = np.array([[4.1, 0.0, 0.0], [0.6, 3.9, 0.0], [-0.4, 0.3, 4.3]])
RANGE = 6.0  # the synthetic code's pair range (CP2K's comes from its basis radii)
AXIS = np.array([0.48, -0.6, 0.64])


def _structure() -> Structure:
    """Hf, O, O with fractional coordinates outside [-0.5, 0.5): every atom is wrapped."""
    frac = np.array([[0.7, 0.1, -0.2], [1.3, 0.6, 0.2], [0.1, -0.8, 0.45]])
    return Structure([72, 8, 8], frac @ CELL, CELL, True)


def _value(d: np.ndarray) -> np.ndarray:
    """Model matrix element of a pair at vector d: even in d (so M_R = M_{-R}^T), not isotropic."""
    r = np.linalg.norm(d, axis=-1)
    return np.exp(-r) * (1.0 + 0.3 * (d @ AXIS) ** 2)


def _write_run(tmp_path, st: Structure) -> tuple[str, np.ndarray, float]:
    """CP2K-style per-image files and image tables for the wrapped positions CP2K would be given;
    returns (output text, code-order orbital weights, ||H||_F^2 over every image written)."""
    basis = get_basis("szv-molopt-sr")
    norb = basis.norb_per_atom(st.numbers)
    n = int(norb.sum())
    atom_of = np.repeat(np.arange(st.n_atoms), norb)
    weight = 1.0 + 0.1 * np.arange(n)
    q = wrapped_positions(st)[0]
    rows, total2 = [], 0.0
    for R in itertools.product(range(-3, 4), repeat=3):
        d = q[atom_of][None, :, :] + np.asarray(R) @ CELL - q[atom_of][:, None, :]  # [mu, nu, 3]
        inside = np.linalg.norm(d, axis=-1) < RANGE
        if not inside.any():
            continue
        rows.append(R)
        mu, nu = np.nonzero(inside)
        vals = _value(d[mu, nu]) * weight[mu] * weight[nu]
        total2 += float(vals @ vals)
        for tag, scale in (("KS", 1.0), ("S", 0.5)):
            lines = "\n".join(f"{a + 1:8d}{b + 1:8d} {v:.16E}" for a, b, v in zip(mu, nu, scale * vals))
            (tmp_path / f"zoo-{tag}_SPIN_1_R_{len(rows)}-1_0.csr").write_text(lines + "\n")
    table = "".join(f"{k + 1:10d}{R[0]:7d}{R[1]:7d}{R[2]:7d}\n" for k, R in enumerate(rows))
    log = "".join(f" {tag} CSR write| {len(rows)} periodic images\n      Number    X      Y      Z\n{table}"
                  for tag in ("KS", " S"))
    return log, weight, total2


def test_wrapped_positions_follow_cp2k_window():
    frac = np.array([[0.7, -0.3, 1.2], [0.5, -0.5, 0.49999999999], [-1.5, 2.0, 0.0]])
    st = Structure([14, 14, 14], frac @ CELL, CELL, True)
    pos, w = wrapped_positions(st)
    inside = pos @ np.linalg.inv(CELL)
    assert w.tolist() == [[-1, 0, -1], [-1, 0, 0], [1, -2, 0]]  # into [-0.5, 0.5): the +0.5 face goes to -0.5
    assert np.all(np.abs(inside) <= 0.5 - FACE_MARGIN + 1e-15)  # kept off the faces CP2K could wrap either way
    assert np.allclose(inside, frac + w, atol=2 * FACE_MARGIN)


def test_image_table_is_read_and_checked():
    log = (" KS CSR write| 3 periodic images\n      Number    X      Y      Z\n"
           "   1  0  0  0\n   2 -1  0  2\n   3  1  0 -2\n")
    assert image_table(log, "KS") == {1: (0, 0, 0), 2: (-1, 0, 2), 3: (1, 0, -2)}
    with pytest.raises(EngineError, match="cut short after 2 of 3 rows"):
        image_table(log.rsplit("\n", 2)[0] + "\n SCF done\n", "KS")
    with pytest.raises(EngineError, match="no 'S CSR write"):
        image_table(log, "S")


def _expected_block(st, i, j, shift, cc):
    d = edge_vectors_np(st.positions, st.cell, np.array([[i, j]]), np.array([shift]))[0]
    if np.linalg.norm(d) >= RANGE:
        return np.zeros((cc[i].size, cc[j].size))
    return _value(d) * np.outer(cc[i], cc[j])


@pytest.mark.parametrize("cutoff", [3.0, 7.0])
def test_synthetic_run_maps_onto_edges(tmp_path, cutoff):
    st = _structure()
    basis = get_basis("szv-molopt-sr")
    log, weight, total2 = _write_run(tmp_path, st)
    rec = images_to_record(st, tmp_path, "zoo", log, basis, "cp2k", wrapped_positions(st)[1], cutoff, "x")
    perm, sign = orbital_reorder(st.numbers, basis, "cp2k")
    off = np.concatenate([[0], np.cumsum(basis.norb_per_atom(st.numbers))])
    c_int = weight[perm] * sign
    cc = [c_int[off[a]:off[a + 1]] for a in range(st.n_atoms)]
    for a, block in enumerate(rec.onsite_blocks("H")):
        assert np.allclose(block, _value(np.zeros(3)) * np.outer(cc[a], cc[a]), rtol=1e-14, atol=1e-15)
    for (i, j), shift, h, s in zip(rec.edge_index, rec.edge_shift, rec.edge_blocks("H"), rec.edge_blocks("S")):
        want = _expected_block(st, i, j, shift, cc)
        assert np.allclose(h, want, rtol=1e-14, atol=1e-15) and np.allclose(s, 0.5 * want, rtol=1e-14, atol=1e-15)
    lengths = np.linalg.norm(edge_vectors_np(st.positions, st.cell, rec.edge_index, rec.edge_shift), axis=1)
    meta = rec.meta
    assert meta["edges_without_cp2k_block"] == int((lengths >= RANGE).sum())
    assert RANGE - 0.5 < meta["cp2k_longest_pair_A"] < RANGE
    # the kept fraction of ||H||_F: the stored blocks against every pair the synthetic code wrote
    kept2 = float((rec.h_onsite ** 2).sum() + (rec.h_offsite ** 2).sum())
    assert np.isclose(meta["kept_frac_frobenius_h"], np.sqrt(kept2 / total2), rtol=1e-12)
    assert np.isclose(meta["dropped_frac_frobenius_h"], np.sqrt(max(1 - kept2 / total2, 0.0)), rtol=1e-9, atol=1e-7)
    if cutoff < RANGE:
        assert 0.5 < meta["kept_frac_frobenius_h"] < 1.0 and meta["dropped_max_abs_h"] > 0
    else:
        assert meta["kept_frac_frobenius_h"] == 1.0 and meta["dropped_max_abs_h"] == 0.0


def test_unequal_image_tables_are_an_error(tmp_path):
    st = _structure()
    log, _, _ = _write_run(tmp_path, st)
    head, tail = log.split(" S CSR write|")
    n = int(tail.split()[0])
    broken = head + " S CSR write|" + tail.replace(f"{n} periodic images", f"{n - 1} periodic images", 1)
    with pytest.raises(EngineError, match="different image tables"):
        images_to_record(st, tmp_path, "zoo", broken, get_basis("szv-molopt-sr"), "cp2k", wrapped_positions(st)[1],
                         3.0, "x")
