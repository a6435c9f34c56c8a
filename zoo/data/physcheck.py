"""Physics validation of a Record: the faults `validate.py` cannot see from shapes alone.

`validate.validate_record` checks that a file is *well formed* (shapes, indices, NaN/inf). This
module checks that the numbers are a *Hamiltonian*:

- ``onsite_nonhermitian``  on-site blocks with max |B - B^H| > tol (H and S);
- ``pair_nonhermitian``    edge pairs with max |H_ij(R) - H_ji(-R)^H| > tol (H and S);
- ``missing_reverse``      edges (i, j, R) stored without (j, i, -R) (ADR 0004 stores both);
- ``beyond_cutoff``        blocks of atom pairs farther apart than the card's cutoff;
- ``s_not_pd``             S(Gamma) not positive definite (dense Cholesky for small systems,
                           sparse lowest-eigenvalue estimate for large ones).

`check_record` returns a `Report` with counts. `repair_record` applies the repairs that are well
defined -- drop edges beyond the cutoff, add a missing reverse edge as the (conjugate) transpose,
average each block with its partner -- and leaves S that is not positive definite alone (no
unique repair exists). `check_dataset` / `repair_dataset` do the same for a dataset directory,
writing the repaired copy through `DatasetWriter` (staging directory + rename, never half-written).

Everything is vectorised over the flat ragged block arrays: a gather index maps each value of a
block to the matching value of its transposed partner, so a 500k-edge record is checked without
a Python loop over edges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from zoo.data.format import Dataset, DatasetWriter, Record
from zoo.data.graph import edge_vectors_np, reverse_edge_index
from zoo.physics.assembly import block_offsets
from zoo.errors import DataError

#: absolute tolerance (Hartree for H, dimensionless for S) for hermiticity
DEFAULT_TOL = 1e-6
#: slack (Angstrom) on the cutoff: card cutoffs are rounded up to 0.01 A above the longest edge
CUTOFF_SLACK = 1e-6
#: smallest eigenvalue of S(Gamma) below which S counts as not positive definite
S_MIN_EIG = 1e-10
#: orbital count up to which S is checked densely (Cholesky); above it, a sparse estimate
DENSE_MAX = 3000
#: values per vectorised step: bounds the index arrays (~5 x 8 bytes per value) for huge records
CHUNK = 1 << 21

KINDS = ("onsite_nonhermitian", "pair_nonhermitian", "missing_reverse", "beyond_cutoff", "s_not_pd")
REPAIRABLE = frozenset({"onsite_nonhermitian", "pair_nonhermitian", "missing_reverse", "beyond_cutoff"})


@dataclass
class Finding:
    """One kind of fault in one matrix: how many blocks/edges, out of how many, and how bad."""

    kind: str
    matrix: str  # "H", "S" or "" (graph findings)
    count: int
    total: int
    worst: float  # largest deviation (Ha / - / A) or, for s_not_pd, the lowest eigenvalue
    detail: str

    @property
    def repairable(self) -> bool:
        return self.kind in REPAIRABLE

    def __str__(self) -> str:
        return self.detail


@dataclass
class Report:
    """Findings for one record. Empty findings = the record passed."""

    name: str
    path: str | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def repairable(self) -> bool:
        return all(f.repairable for f in self.findings)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            key = f"{f.matrix}:{f.kind}" if f.matrix else f.kind
            out[key] = out.get(key, 0) + f.count
        return out

    def summary(self) -> str:
        if self.ok:
            return "ok"
        return "; ".join(f.detail for f in self.findings)

    def raise_if_any(self) -> None:
        """--strict: any finding is a DataError naming the file and every finding with its count."""
        if not self.ok:
            raise DataError(f"structure {self.name!r} fails the physics check: {self.summary()}", self.path)

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "ok": self.ok,
                "findings": [asdict(f) for f in self.findings]}


# -- index helpers --------------------------------------------------------------------------

def _local(nrow: np.ndarray, ncol: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(block id, row, col) of every value of ragged row-major blocks, in flat order."""
    sizes = nrow * ncol
    total = int(sizes.sum())
    blk = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    loc = np.arange(total, dtype=np.int64) - starts[blk]
    nc = ncol[blk]
    return blk, loc // nc, loc % nc


def _transpose_gather(offsets: np.ndarray, nrow: np.ndarray, ncol: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """For every value (a, b) of block e, the flat index of value (b, a) of block partner[e]
    (which has shape ncol[e] x nrow[e])."""
    blk, a, b = _local(nrow, ncol)
    return offsets[partner[blk]] + b * nrow[blk] + a


def reverse_edges(rec: Record) -> np.ndarray:
    """Index of edge (j, i, -R) for every edge (i, j, R); -1 where it is missing."""
    return _reverse(rec.edge_index, rec.edge_shift)


def _reverse(ei: np.ndarray, sh: np.ndarray) -> np.ndarray:
    return reverse_edge_index(ei, sh)


def _chunks(sizes: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    """Block ids in consecutive runs of about `chunk` values each (at least one block per run),
    so index arrays stay small for 500k-edge records."""
    ends = np.cumsum(sizes)
    start = 0
    while start < sizes.size:
        done = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + chunk, side="right")))
        yield np.arange(start, min(stop, sizes.size))
        start = stop


def _partner_values(offsets: np.ndarray, nrow: np.ndarray, ncol: np.ndarray, partner: np.ndarray,
                    ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For blocks `ids`: (block of each value (0..len(ids)-1), flat index of value (a, b), flat index of
    value (b, a) of the partner block, which has shape ncol x nrow)."""
    blk, a, b = _local(nrow[ids], ncol[ids])
    g = ids[blk]
    return blk, offsets[g] + a * ncol[g] + b, offsets[partner[g]] + b * nrow[g] + a


def _deviation(values: np.ndarray, offsets: np.ndarray, nrow: np.ndarray, ncol: np.ndarray, partner: np.ndarray,
               chunk: int) -> np.ndarray:
    """max |B - P^H| per block, P = the block's partner."""
    out = np.zeros(nrow.size)
    for ids in _chunks(nrow * ncol, chunk):
        blk, v, p = _partner_values(offsets, nrow, ncol, partner, ids)
        dev = np.zeros(ids.size)
        np.maximum.at(dev, blk, np.abs(values[v] - np.conj(values[p])))
        out[ids] = dev
    return out


def _hermitian_average(values: np.ndarray, offsets: np.ndarray, nrow: np.ndarray, ncol: np.ndarray,
                       partner: np.ndarray, chunk: int) -> np.ndarray:
    """(B + P^H) / 2 for every block."""
    out = np.empty_like(values)
    for ids in _chunks(nrow * ncol, chunk):
        _, v, p = _partner_values(offsets, nrow, ncol, partner, ids)
        out[v] = 0.5 * values[v] + 0.5 * np.conj(values[p])  # halve first: 1e308 + 1e308 would overflow
    return out


# -- the checks -----------------------------------------------------------------------------

def _hermiticity(rec: Record, which: str, tol: float, rev: np.ndarray, chunk: int = CHUNK) -> list[Finding]:
    on, off = (rec.h_onsite, rec.h_offsite) if which == "H" else (rec.s_onsite, rec.s_offsite)
    n = rec.norb
    ei = rec.edge_index
    found: list[Finding] = []
    # on-site: B_ii = B_ii^H
    dev = _deviation(on, block_offsets(n, n), n, n, np.arange(n.size), chunk)
    bad = dev > tol
    if bad.any():
        found.append(Finding("onsite_nonhermitian", which, int(bad.sum()), int(n.size), float(dev.max()),
                             f"{which} on-site blocks not hermitian: {int(bad.sum())} of {n.size} atoms "
                             f"(max |B - B^H| = {dev.max():.3g}, tol {tol:g})"))
    # pairs: B_ij(R) = B_ji(-R)^H, over edges whose partner exists
    has = rev >= 0
    if has.any():
        ni, nj = n[ei[:, 0]], n[ei[:, 1]]
        dev = _deviation(off, block_offsets(ni, nj), ni, nj, np.where(has, rev, np.arange(rev.size)), chunk)
        bad = (dev > tol) & has
        n_pairs = int(has.sum()) // 2  # (i, j, R) and (j, i, -R) are distinct edges: (i, i, 0) is on-site
        if bad.any():
            n_bad = int(bad.sum()) // 2  # each mismatched pair is seen from both of its edges
            found.append(Finding("pair_nonhermitian", which, n_bad, n_pairs, float(dev.max()),
                                 f"{which} edge blocks not hermitian: {n_bad} of {n_pairs} pairs "
                                 f"(max |B_ij(R) - B_ji(-R)^H| = {dev.max():.3g}, tol {tol:g})"))
    return found


def edge_lengths(rec: Record) -> np.ndarray:
    if rec.n_edges == 0:
        return np.zeros(0)
    return np.linalg.norm(edge_vectors_np(rec.positions, rec.cell, rec.edge_index, rec.edge_shift), axis=1)


def lowest_overlap_eigenvalue(rec: Record, dense_max: int = DENSE_MAX, measure: bool = False) -> tuple[float, str]:
    """(lowest eigenvalue of the hermitized S(Gamma), method). Small systems: dense Cholesky, and
    the exact eigenvalue only when Cholesky fails (always with `measure=True`); large ones: Lanczos
    estimate (ARPACK)."""
    s = rec.matrix("S", hermitize=True)
    n = s.shape[0]
    if n <= dense_max:
        dense = s.toarray()
        if not measure:
            try:
                np.linalg.cholesky(dense)
                return float("nan"), "cholesky"  # positive definite; the value is not needed
            except np.linalg.LinAlgError:
                pass
        try:
            return float(np.linalg.eigvalsh(dense)[0]), "dense"
        except np.linalg.LinAlgError:  # absurd magnitudes (1e308) defeat the eigen-solver too
            return float("nan"), "dense (eigen-solver did not converge)"
    s = sp.csr_matrix(s)
    try:
        val = spla.eigsh(s, k=1, which="SA", tol=1e-6, maxiter=max(1000, 20 * n), return_eigenvectors=False)
        return float(np.real(val[0])), "lanczos"
    except spla.ArpackNoConvergence as exc:
        vals = np.real(exc.eigenvalues)
        return (float(vals.min()) if vals.size else float("nan")), "lanczos (not converged)"
    except spla.ArpackError as exc:
        return float("nan"), f"lanczos failed: {exc}"


def check_record(rec: Record, cutoff: float | None = None, tol: float = DEFAULT_TOL, path: str | Path | None = None,
                 overlap: bool = True, dense_max: int = DENSE_MAX) -> Report:
    """Every physics finding of `rec`, with counts. The record must already be well formed
    (`validate_record`): indices in range, block sizes matching the basis, finite values."""
    report = Report(rec.name, None if path is None else str(path))
    rev = reverse_edges(rec)
    missing = int((rev < 0).sum())
    if missing:
        report.findings.append(Finding("missing_reverse", "", missing, rec.n_edges, float(missing),
                                       f"inconsistent image shifts: {missing} of {rec.n_edges} edges (i, j, R) "
                                       f"lack their reverse (j, i, -R)"))
    if cutoff is not None and rec.n_edges:
        d = edge_lengths(rec)
        far = d > cutoff + CUTOFF_SLACK
        if far.any():
            report.findings.append(Finding("beyond_cutoff", "", int(far.sum()), rec.n_edges, float(d.max()),
                                           f"{int(far.sum())} of {rec.n_edges} edge blocks couple atoms beyond the "
                                           f"cutoff {cutoff} A (farthest {d.max():.3f} A)"))
    for which in ("H", "S") if rec.has_overlap else ("H",):
        report.findings += _hermiticity(rec, which, tol, rev)
    if overlap and rec.has_overlap:
        lo, how = lowest_overlap_eigenvalue(rec, dense_max)
        if how != "cholesky" and not lo > S_MIN_EIG:
            what = f"lowest eigenvalue {lo:.3g}" if np.isfinite(lo) else "no eigenvalue could be computed"
            report.findings.append(Finding("s_not_pd", "S", 1, 1, lo,
                                           f"S(Gamma) is not positive definite: {what} ({how})"))
    return report


# -- repairs --------------------------------------------------------------------------------

def _take_blocks(values: np.ndarray, offsets: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Concatenate flat blocks `order` (offsets has one more entry than there are blocks)."""
    sizes = (offsets[1:] - offsets[:-1])[order]
    starts = offsets[:-1][order]
    idx = np.repeat(starts, sizes) + (np.arange(int(sizes.sum()), dtype=np.int64)
                                      - np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes))
    return values[idx]


def repair_record(rec: Record, cutoff: float | None = None) -> Record:
    """A copy with the well-defined repairs applied: edges beyond `cutoff` dropped, missing reverse
    edges added as the (conjugate) transpose, every on-site block and every edge pair averaged
    with its hermitian partner, edges sorted by (i, j, R). S is symmetrized but never changed
    otherwise: an S that is not positive definite has no unique repair."""
    n = rec.norb
    ei, sh = rec.edge_index, rec.edge_shift
    mats = {"H": (rec.h_onsite, rec.h_offsite)}
    if rec.has_overlap:
        mats["S"] = (rec.s_onsite, rec.s_offsite)
    # 1. drop edges beyond the cutoff (an edge and its reverse have the same length)
    keep = np.ones(rec.n_edges, dtype=bool)
    if cutoff is not None and rec.n_edges:
        keep = edge_lengths(rec) <= cutoff + CUTOFF_SLACK
    o_off = block_offsets(n[ei[:, 0]], n[ei[:, 1]])
    kept = np.flatnonzero(keep)
    ei, sh = ei[kept], sh[kept]
    mats = {k: (on, _take_blocks(off, o_off, kept)) for k, (on, off) in mats.items()}
    # 2. add missing reverse edges as the conjugate transpose of their partner
    rev = _reverse(ei, sh)
    miss = np.flatnonzero(rev < 0)
    if miss.size:
        ni, nj = n[ei[:, 0]], n[ei[:, 1]]
        o_off = block_offsets(ni, nj)
        # new edge k is (j, i, -R) of edge miss[k], shape nj x ni; its value (b, a) is conj(B[a, b])
        g = _transpose_gather(o_off[:-1], nj[miss], ni[miss], miss)
        mats = {k: (on, np.concatenate([off, np.conj(off[g])])) for k, (on, off) in mats.items()}
        ei = np.concatenate([ei, ei[miss][:, ::-1]])
        sh = np.concatenate([sh, -sh[miss]])
    # 3. sort edges like neighbor_graph does, so repaired files are deterministic
    order = np.lexsort((sh[:, 2], sh[:, 1], sh[:, 0], ei[:, 1], ei[:, 0]))
    o_off = block_offsets(n[ei[:, 0]], n[ei[:, 1]])
    mats = {k: (on, _take_blocks(off, o_off, order)) for k, (on, off) in mats.items()}
    ei, sh = ei[order], sh[order]
    # 4. average every block with its hermitian partner (every edge now has one)
    rev = _reverse(ei, sh)
    ni, nj = n[ei[:, 0]], n[ei[:, 1]]
    sym = {k: (_hermitian_average(on, block_offsets(n, n), n, n, np.arange(n.size), CHUNK),
               _hermitian_average(off, block_offsets(ni, nj), ni, nj, rev, CHUNK)) for k, (on, off) in mats.items()}
    s_on, s_off = sym.get("S", (None, None))
    meta = dict(rec.meta)
    meta["repaired"] = "zoo.data.physcheck.repair_record"
    return Record(rec.name, rec.structure, rec.basis, ei, sh, sym["H"][0], sym["H"][1], s_on, s_off,
                  rec.spinful, rec.n_electrons, meta)


# -- datasets -------------------------------------------------------------------------------

def _read_all(ds: Dataset, tol: float) -> Iterator[tuple[str, Record | None, Report]]:
    """(name, record or None, report) per structure; a structure that does not even validate is
    reported as an 'invalid' finding instead of stopping the scan."""
    for name in ds.names:
        path = ds.file_of(name)
        try:
            rec = ds.read(name)
        except DataError as exc:
            rep = Report(name, str(path), [Finding("invalid", "", 1, 1, float("nan"), exc.fault)])
            yield name, None, rep
            continue
        yield name, rec, check_record(rec, ds.card.cutoff, tol, path=path)


def check_dataset(path: str | Path, tol: float = DEFAULT_TOL, strict: bool = False) -> list[Report]:
    """A report per structure. strict: the first finding raises a DataError naming the file."""
    ds = Dataset.open(path)
    reports = []
    for _, _, rep in _read_all(ds, tol):
        if strict:
            rep.raise_if_any()
        reports.append(rep)
    return reports


def repair_dataset(path: str | Path, dest: str | Path | None = None, tol: float = DEFAULT_TOL
                   ) -> tuple[Path, list[Report], list[Report]]:
    """Write a repaired copy of the dataset at `dest` (None: replace it in place).

    Returns (path, reports before, reports after). Raises DataError (and writes nothing) when a
    structure has a finding without a well-defined repair or still fails after repair. The new
    dataset is built in a staging directory and renamed into place by `DatasetWriter`, so an
    interruption leaves the original untouched.
    """
    src = Path(path)
    ds = Dataset.open(src)
    out = src if dest is None else Path(dest)
    if dest is not None and out.exists():
        raise DataError("destination exists; choose a new path or repair in place", out)
    card = ds.card
    before: list[Report] = []
    after: list[Report] = []
    with DatasetWriter(out, card.name, card.basis, card.cutoff, card.level_of_theory,
                       image_convention=card.image_convention, provenance=card.provenance,
                       overwrite=dest is None) as w:
        for name, rec, rep in _read_all(ds, tol):
            before.append(rep)
            if rec is None or not rep.repairable:
                raise DataError(f"structure {name!r} has findings with no well-defined repair: "
                                f"{'; '.join(f.detail for f in rep.findings if not f.repairable)}", rep.path)
            fixed = repair_record(rec, card.cutoff) if not rep.ok else rec
            fixed.name = name
            rep2 = check_record(fixed, card.cutoff, tol, path=out / card.structures[name]["file"])
            if not rep2.ok:
                raise DataError(f"structure {name!r} still fails after repair: {rep2.summary()}", rep.path)
            after.append(rep2)
            try:
                w.add(fixed)
            except DataError as exc:  # the writer's own validation names no file: name the source
                raise DataError(f"structure {name!r} cannot be written after repair: {exc.fault}", rep.path) from None
        fixes: dict[str, int] = {}
        for r in before:
            for k, v in r.counts().items():
                fixes[k] = fixes.get(k, 0) + v
        w.provenance = {**card.provenance, "physcheck_repair": {
            "source": str(src.resolve()), "source_hash": card.hash(), "tol": tol,
            "repaired_structures": sum(not r.ok for r in before), "findings": fixes}}
        w.finalize(card.splits, description=card.description)
    return out, before, after


__all__ = ["DEFAULT_TOL", "Finding", "Report", "check_record", "repair_record", "check_dataset", "repair_dataset",
           "reverse_edges", "lowest_overlap_eigenvalue"]
