"""Exact Hamming search over packed codes: multi-index hashing, with an exact scan behind it.

``HammingIndex`` is the code-level index: give it packed uint8 codes and int64 ids, ask for
the exact k nearest neighbours or every code within a radius.

Multi-index hashing (Norouzi, Punjani & Fleet, 2012) cuts each code into m substrings of
about log2(n) bits and keeps one hash table per substring. By the pigeonhole principle a
code within ``m * (s + 1) - 1`` bits of the query is within ``s`` bits of it on at least one
substring, so probing every table with up to ``s`` bit flips finds all of them, and checking
the candidates' full distances makes the answer exact. FAISS ``IndexBinaryMultiHash`` does
the probing and checking in C++; hashdex chooses, per batch, how far to probe (starting
where the k-th neighbour lay in the previous batch, widening while that costs less than a
scan), sends the queries it could not finish to the exact scan of the same index's
``IndexBinaryFlat`` storage, and maps positions to ids. Every path returns brute-force
answers. Searches hold a lock: they set the probe depth on the shared FAISS index.
"""

from __future__ import annotations

import json
import threading
import time
from math import comb, log2
from pathlib import Path

import faiss
import numpy as np

from retrieval.codes import check_bits, check_codes

# One substring probe, with the check of its candidates, costs about as much as scanning this
# many codes with IndexBinaryFlat (measured on x86-64, 64-bit codes: benchmarks/query_speed.py).
PROBE_COST = 500.0
# After probing measured slower than scanning, the scan serves this many batches alone.
PROBE_RETRY = 16


def substring_count(bits: int, n: int) -> int:
    """m: substrings of about log2(n) bits (Norouzi et al.'s choice, so that a substring
    bucket holds about one code), at most 64 bits each (FAISS's limit)."""
    target = max(8.0, log2(max(n, 2)))
    return int(np.clip(round(bits / target), -(-bits // 64), bits // 8))


def _grouped_order(qidx: np.ndarray, dist: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Order of (query, distance, id) triples: by query, then distance, then id."""
    return np.lexsort((ids, dist, qidx))


def _pad_topk(qidx, dist, ids, nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scatter the k best (distance, id) pairs of each query into padded (nq, k) arrays."""
    order = _grouped_order(qidx, dist, ids)
    qidx, dist, ids = qidx[order], dist[order], ids[order]
    group_start = np.searchsorted(qidx, qidx, side="left")
    rank = np.arange(len(qidx)) - group_start
    keep = rank < k
    D = np.full((nq, k), -1, np.int32)
    ID = np.full((nq, k), -1, np.int64)
    D[qidx[keep], rank[keep]] = dist[keep]
    ID[qidx[keep], rank[keep]] = ids[keep]
    return D, ID


def _csr_rows(lims: np.ndarray) -> np.ndarray:
    """The query index of every answer of a CSR result."""
    return np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))


def _knn_by_scan(flat: faiss.IndexBinaryFlat, ids: np.ndarray, queries: np.ndarray, k: int):
    """Exact top k of an exhaustive scan, as padded (distances, ids)."""
    if flat.ntotal == 0 or len(queries) == 0:
        return np.full((len(queries), k), -1, np.int32), np.full((len(queries), k), -1, np.int64)
    kk = min(k, flat.ntotal)
    dist, pos = flat.search(queries, kk)
    valid = pos >= 0
    qidx = np.repeat(np.arange(len(queries)), kk)[valid.ravel()]
    # FAISS orders ties arbitrarily; re-sort by (distance, id) so answers are deterministic.
    return _pad_topk(qidx, dist[valid], ids[pos[valid]], len(queries), k)


class HammingIndex:
    """Exact Hamming search over packed codes with external int64 ids.

    >>> index = HammingIndex(64)
    >>> index.add(codes, ids)                     # codes: uint8 (n, 8)
    >>> D, I = index.search(queries, k=10)        # int32 / int64 (nq, 10), -1 padded
    >>> lims, D, I = index.within(queries, radius=2)   # CSR, like faiss range_search
    """

    def __init__(self, bits: int):
        self.bits = check_bits(bits)
        self.codes = np.zeros((0, self.bits // 8), np.uint8)
        self.ids = np.zeros(0, np.int64)
        self._multi: faiss.IndexBinaryMultiHash | None = None
        self._lock = threading.Lock()
        # Median k-th neighbour distance of the last batch: where the next probe starts.
        self._recent_radius: dict[int, int] = {}
        # Seconds per query seen for probing (finished queries) and scanning, and batches
        # since probing last lost to the scan (it is retried every PROBE_RETRY batches).
        self._seconds = {"probe": 0.0, "scan": 0.0}
        self._since_probe_lost = 0

    def __len__(self) -> int:
        return len(self.ids)

    # -- building -----------------------------------------------------------------------------

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Append codes with their ids; an id already present is an error (remove it first)."""
        codes = check_codes(codes, self.bits)
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer) or ids.shape != (len(codes),):
            raise ValueError(
                f"ids must be {len(codes)} integers, one per code; got {ids.dtype} {ids.shape}"
            )
        ids = ids.astype(np.int64)
        if len(np.unique(ids)) != len(ids) or np.isin(ids, self.ids).any():
            raise ValueError("ids must be unique and not already in the index; remove them first")
        self.codes = np.concatenate([self.codes, codes])
        self.ids = np.concatenate([self.ids, ids])
        self._multi = None  # m depends on n: rebuilt on the next query

    def remove(self, ids: np.ndarray) -> int:
        """Remove the codes with these ids; returns how many were removed."""
        keep = ~np.isin(self.ids, np.asarray(ids, np.int64))
        removed = int((~keep).sum())
        if removed:
            self.codes, self.ids = np.ascontiguousarray(self.codes[keep]), self.ids[keep]
            self._multi = None
        return removed

    @property
    def substrings(self) -> int:
        return substring_count(self.bits, len(self))

    @property
    def multi(self) -> faiss.IndexBinaryMultiHash:
        """The substring tables (built on first use); ``.storage`` is the exact flat index."""
        if self._multi is None:
            m = self.substrings
            multi = faiss.IndexBinaryMultiHash(self.bits, m, min(64, self.bits // m))
            if len(self):
                multi.add(np.ascontiguousarray(self.codes))
            self._multi = multi
        return self._multi

    def _scan(self) -> faiss.IndexBinaryFlat:
        return faiss.downcast_IndexBinary(self.multi.storage)

    def bucket_sizes(self) -> np.ndarray:
        """How many codes share each distinct code."""
        if not len(self):
            return np.zeros(0, np.int64)
        void = np.ascontiguousarray(self.codes).view(f"V{self.bits // 8}").ravel()
        return np.unique(void, return_counts=True)[1]

    def codes_of(self, ids: np.ndarray) -> np.ndarray:
        """The stored codes of ``ids`` (packed, in the order given); a ValueError names an id
        that is not stored."""
        ids = np.asarray(ids, np.int64).ravel()
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = np.asarray(self.ids)[order]
        at = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
        missing = ids[(sorted_ids[at] != ids) if len(sorted_ids) else np.ones(len(ids), bool)]
        if len(missing):
            raise ValueError(f"id {int(missing[0])} is not in the index")
        return np.asarray(self.codes)[order[at]]

    # -- searching ----------------------------------------------------------------------------

    def _probes(self, flips: int) -> int:
        """Substring probes per query to search every table with up to ``flips`` bit flips."""
        b = self.multi.b
        return self.multi.nhash * sum(comb(b, s) for s in range(min(flips, b) + 1))

    def _affordable(self, flips: int) -> bool:
        return PROBE_COST * self._probes(flips) < len(self)

    def _ball(self, queries: np.ndarray, radius: int, flips: int):
        """(query index, distance, position) of every code within ``radius``, probing every
        substring with up to ``flips`` flips; exact when radius < m * (flips + 1)."""
        self.multi.nflip = flips
        lims, dist, pos = self.multi.range_search(queries, radius + 1)  # strict: d < radius + 1
        return _csr_rows(lims), dist.astype(np.int32), pos

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest codes per query: (distances int32, ids int64), each (nq, k).

        Rows are ordered by distance, then id (ties at the k-th distance may be cut
        differently from a scan); padded with -1 where the index has fewer than k codes.
        """
        with self._lock:
            return self._search(queries, k)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = check_codes(queries, self.bits, "queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k} must be a positive integer")
        nq, n = len(queries), len(self)
        D = np.full((nq, k), -1, np.int32)
        ID = np.full((nq, k), -1, np.int64)
        if nq == 0 or n == 0:
            return D, ID
        need, m = min(k, n), self.multi.nhash
        pending = np.arange(nq)
        # Start at the ball that held the k-th neighbour last time: smaller ones would be
        # probed in vain (each probe covers every smaller number of flips too).
        flips = max(0, -(-(self._recent_radius.get(k, 0) + 1) // m) - 1)
        probe_s, scan_s = self._seconds["probe"], self._seconds["scan"]
        probe = not probe_s > scan_s > 0 or self._since_probe_lost >= PROBE_RETRY
        self._since_probe_lost = 0 if probe else self._since_probe_lost + 1
        start = time.perf_counter()
        while probe and len(pending) and m * flips < self.bits and self._affordable(flips):
            radius = min(self.bits, m * (flips + 1) - 1)
            q, dist, pos = self._ball(queries[pending], radius, flips)
            finished = np.bincount(q, minlength=len(pending)) >= need
            if finished.any():
                sel = finished[q]
                Dp, Ip = _pad_topk(q[sel], dist[sel], self.ids[pos[sel]], len(pending), k)
                D[pending[finished]], ID[pending[finished]] = Dp[finished], Ip[finished]
            pending = pending[~finished]
            flips += 1
        if probe:
            self._remember("probe", time.perf_counter() - start, nq - len(pending), nq)
        if len(pending):
            start = time.perf_counter()
            D[pending], ID[pending] = self._scan_knn(queries[pending], k)
            self._remember("scan", time.perf_counter() - start, len(pending), len(pending))
        self._recent_radius[k] = int(np.median(D[:, need - 1]))
        return D, ID

    def _remember(self, path: str, seconds: float, finished: int, attempted: int) -> None:
        """Moving average of the seconds a path spends per query it finishes."""
        per_query = seconds / finished if finished else np.inf if attempted else 0.0
        previous = self._seconds[path]
        self._seconds[path] = (
            per_query if previous in (0.0, np.inf) else (0.8 * previous + 0.2 * per_query)
        )

    def _scan_knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _knn_by_scan(self._scan(), self.ids, queries, k)

    def search_subset(
        self, queries: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest among the codes with these ids only (an exact scan of them)."""
        queries = check_codes(queries, self.bits, "queries")
        positions = np.flatnonzero(np.isin(self.ids, ids))
        subset = faiss.IndexBinaryFlat(self.bits)
        if len(positions):
            subset.add(np.ascontiguousarray(np.asarray(self.codes)[positions]))
        return _knn_by_scan(subset, np.asarray(self.ids)[positions], queries, k)

    def within(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every code within ``radius`` bits of each query, CSR-style like faiss range_search.

        Returns ``lims`` (nq + 1,), ``distances`` int32 and ``ids`` int64: the answers of query
        i are ``ids[lims[i]:lims[i + 1]]``, ordered by distance, then id.
        """
        with self._lock:
            return self._within(queries, radius)

    def _within(self, queries: np.ndarray, radius: int):
        queries = check_codes(queries, self.bits, "queries")
        integer = isinstance(radius, (int, np.integer)) and not isinstance(radius, bool)
        if not integer or not 0 <= radius <= self.bits:
            raise ValueError(f"radius={radius} must be an integer between 0 and bits={self.bits}")
        nq = len(queries)
        if nq == 0 or len(self) == 0:
            return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        flips = radius // self.multi.nhash
        if self._affordable(flips):
            q, d, pos = self._ball(queries, radius, flips)
        else:
            lims, d, pos = self._scan().range_search(queries, radius + 1)
            q, d = _csr_rows(lims), d.astype(np.int32)
        ids = self.ids[pos]
        order = _grouped_order(q, d, ids)
        lims = np.searchsorted(q[order], np.arange(nq + 1)).astype(np.int64)
        return lims, d[order], ids[order]

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write codes and ids as .npy files plus a config.json (the substring tables are
        rebuilt from the codes on first use)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "codes.npy", np.ascontiguousarray(self.codes), allow_pickle=False)
        np.save(path / "ids.npy", np.ascontiguousarray(self.ids), allow_pickle=False)
        (path / "config.json").write_text(json.dumps({"bits": self.bits, "count": len(self)}))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> HammingIndex:
        """Load a saved index; with ``mmap`` the arrays are memory-mapped read-only."""
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        mode = "r" if mmap else None
        index = cls(config["bits"])
        codes = np.load(path / "codes.npy", mmap_mode=mode, allow_pickle=False)
        index.codes = check_codes(codes, index.bits)
        index.ids = np.load(path / "ids.npy", mmap_mode=mode, allow_pickle=False)
        if len(index.ids) != config["count"] or len(index.codes) != config["count"]:
            raise ValueError(f"{path}: config.json says {config['count']} codes, arrays disagree")
        return index
