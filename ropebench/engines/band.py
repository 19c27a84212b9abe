"""The running state of one task in the one-pass engine: per query, its band ``[lo, hi]`` around
the estimate of its best relevant score, the counts above the band, the band entries kept with
their exact GEMM scores, censoring, and the settlement into first-hit counts at the end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ropebench.engines.base import FirstHits, TaskData
from ropebench.engines.exact import pair_scores

__all__ = ["BandReader", "UNIT_ROUNDOFF"]

UNIT_ROUNDOFF = 2.0 ** -24  # unit roundoff of float32


class BandReader:
    """Running state of one task: per query, counts above the band, band entries, relevant scores."""

    def __init__(self, data: TaskData, max_k: int, exact: bool, estimate: np.ndarray, scale: np.ndarray,
                 band_cap: int) -> None:
        self.data, self.max_k, self.exact, self.band_cap = data, max_k, exact, band_cap
        nq = len(data.queries)
        # A float32 estimate: it and the GEMM value each lie within d·u·|q||g| of the exact dot
        # product, so they differ by at most twice that; the band is twice that again.
        width = 4.0 * (data.queries.shape[1] + 2) * UNIT_ROUNDOFF * scale * (1 + 1e-3) + 1e-30
        scored = np.isfinite(estimate)
        low, high = estimate - width, estimate + width
        lo = np.where(scored, low, np.inf).astype(np.float32)
        hi = np.where(scored, high, np.inf).astype(np.float32)
        # Round outwards so the float32 band still contains the float64 one.
        self.lo = np.where(scored & (lo > low), np.nextafter(lo, np.float32(-np.inf)), lo)  # +inf: not collecting
        self.hi = np.where(scored & (hi < high), np.nextafter(hi, np.float32(np.inf)), hi)
        self.lo_band = self.lo.copy()  # the band as planned (lo is overwritten on censoring)
        self.above = np.zeros(nq, dtype=np.int64)
        self.band_size = np.zeros(nq, dtype=np.int64)
        self.best = np.full(nq, -np.inf, dtype=np.float32)  # s+ from GEMM outputs, filled during the pass
        self.redo = np.zeros(nq, dtype=bool)  # queries for exact rescoring
        self.censored = np.zeros(nq, dtype=bool)
        self.band: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def sort_out(self, queries: np.ndarray, gallery: np.ndarray, values: np.ndarray) -> Any:
        """Split candidate scores (``values >= lo[queries]``) into counts above the band and band
        entries. Reads only ``hi``, which never changes, so it runs outside the lock."""
        d = self.data
        if d.query_rows is not None:  # intra-domain: not itself, not its group
            keep = gallery != d.query_rows[queries]
            if d.query_groups is not None and d.gallery_groups is not None:
                group = d.query_groups[queries]
                keep &= ~((d.gallery_groups[gallery] == group) & (group >= 0))
            queries, gallery, values = queries[keep], gallery[keep], values[keep]
        high = values > self.hi[queries]
        inside = ~high
        band = (queries[inside], gallery[inside], values[inside])
        return np.unique(queries[high], return_counts=True), band, np.unique(band[0], return_counts=True)

    def take(self, sorted_out: Any) -> None:
        """Add what :meth:`sort_out` found (under the lock): counts, censoring, band entries."""
        (counted, n_counted), band, (kept, n_kept) = sorted_out
        if len(counted):
            self.above[counted] += n_counted
            if not self.exact:
                done = counted[(self.above[counted] >= self.max_k) & np.isfinite(self.lo[counted])]
                self.censored[done] = True
                self.lo[done] = np.inf
        if len(kept):
            self.band.append(band)
            self.band_size[kept] += n_kept
            full = kept[self.band_size[kept] > self.band_cap]
            if len(full):
                self.redo[full] = True
                self.lo[full] = np.inf
                self.band_size[full] = 0  # counted once; their entries are dropped at the end

    def finish(self, on_redo: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]) -> FirstHits:
        d = self.data
        scored = np.isfinite(self.lo_band)
        best = self.best
        outside = scored & ((best < self.lo_band) | (best > self.hi))
        redo = self.redo | outside
        censored = self.censored & ~redo
        nq = len(best)
        a = self.above.copy()
        t = np.zeros(nq, dtype=np.int64)
        p = np.zeros(nq, dtype=np.int64)
        if self.band:
            q = np.concatenate([e[0] for e in self.band])
            g = np.concatenate([e[1] for e in self.band])
            v = np.concatenate([e[2] for e in self.band])
            self.band = []
            keep = ~(redo[q] | censored[q])
            q, g = q[keep], g[keep]
            # The band's scores settled in one computation per query in which copies tie exactly
            # (tile GEMMs may score copies at different positions one ulp apart); everything
            # outside the band is far enough from s+ for any computation to agree.
            v = pair_scores(d.queries, d.gallery, q, g)
            relevant = d.gallery_products[g] == d.query_products[q]
            settled = np.full(nq, -np.inf, dtype=np.float32)
            np.maximum.at(settled, q[relevant], v[relevant])
            s = settled[q]
            a += np.bincount(q[(v > s) & ~relevant], minlength=nq)
            t += np.bincount(q[(v == s) & ~relevant], minlength=nq)
            p += np.bincount(q[(v == s) & relevant], minlength=nq)
        a[censored], t[censored], p[censored] = self.max_k, 0, 1
        todo = np.flatnonzero(redo & scored)
        if len(todo):
            a[todo], t[todo], p[todo] = on_redo(todo)
        return FirstHits(scored=scored, a=a[scored], t=t[scored], p=p[scored], censored=censored[scored],
                         n_rescored=len(todo))


