"""Exact Hamming search over packed codes: multi-index hashing, with FAISS's scan behind it.

``HammingIndex`` is the code-level index: give it packed uint8 codes and int64 ids, ask for
the exact k nearest neighbours or every code within a radius.

Multi-index hashing (Norouzi, Punjani & Fleet, 2012) cuts each code into m byte-aligned
substrings and keeps one hash table per substring. By the pigeonhole principle a code within
``r`` bits of the query is within ``r // m`` bits of it on at least one substring, so probing
each table by bit flips up to that small radius finds every candidate; candidates are then
checked with exact distances. Per batch the search probes shell after shell while that costs
less than a linear scan, and sends the queries it could not finish to FAISS
``IndexBinaryFlat``. Every path returns brute-force answers.
"""

from __future__ import annotations

import json
from itertools import pairwise
from math import comb, log2
from pathlib import Path

import faiss
import numpy as np

from retrieval.codes import check_bits, check_codes, flip_masks

# Costs in units of "one code scanned by FAISS" (about 1 ns on x86-64), measured with
# benchmarks/query_speed.py: a probe is a binary search over one table's keys, a candidate a
# gather, an XOR and a popcount in numpy.
PROBE_COST = 200.0
CANDIDATE_COST = 20.0
# Upper bound on query-mask pairs materialised at once while probing (memory: pairs * bytes).
_MAX_PAIRS = 1 << 21
# Shells with more masks than this are never probed, whatever the cost model says.
MAX_SHELL_MASKS = 1 << 16


def _void(codes: np.ndarray) -> np.ndarray:
    """View (n, nbytes) uint8 codes as n opaque byte strings that sort and compare as keys."""
    return np.ascontiguousarray(codes).view(f"V{codes.shape[1]}").ravel()


def _expand_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``range(s, s + c)`` for every pair, vectorised."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts.astype(np.int64), counts) + (np.arange(total) - offsets)


def _words(codes: np.ndarray) -> np.ndarray:
    """Codes as uint64 words (zero-padded to a multiple of 8 bytes), for popcounts."""
    n, nbytes = codes.shape
    pad = (-nbytes) % 8
    if pad:
        codes = np.concatenate([codes, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(codes).view(np.uint64)


class HashTable:
    """Buckets of equal keys: unique keys sorted as byte strings, CSR lists of row positions."""

    def __init__(self, keys: np.ndarray, offsets: np.ndarray, order: np.ndarray):
        self.keys = keys  # (n_buckets, nbytes) uint8, sorted
        self.offsets = offsets  # (n_buckets + 1,) int32 into order
        self.order = order  # (n,) int32 row positions grouped by bucket
        self._keys_void = _void(keys)

    @classmethod
    def build(cls, codes: np.ndarray) -> HashTable:
        void = _void(codes)
        order = np.argsort(void, kind="stable")
        sorted_void = void[order]
        first = np.ones(len(order), np.bool_)
        first[1:] = sorted_void[1:] != sorted_void[:-1]
        starts = np.flatnonzero(first)
        offsets = np.append(starts, len(order)).astype(np.int32)
        keys = np.ascontiguousarray(codes[order[starts]])
        return cls(keys, offsets, order.astype(np.int32))

    @property
    def n_buckets(self) -> int:
        return len(self.keys)

    def probe(self, queries: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose key equals ``query ^ mask`` for some mask: (query index, row position)."""
        nq, m = len(queries), len(masks)
        empty = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if nq == 0 or m == 0 or self.n_buckets == 0:
            return empty
        q_out, r_out = [], []
        step = max(1, _MAX_PAIRS // m)
        for lo in range(0, nq, step):
            block = queries[lo : lo + step]
            cand = _void((block[:, None, :] ^ masks[None, :, :]).reshape(-1, queries.shape[1]))
            pos = np.searchsorted(self._keys_void, cand)
            np.minimum(pos, self.n_buckets - 1, out=pos)
            hit = np.flatnonzero(self._keys_void[pos] == cand)
            if len(hit):
                buckets = pos[hit]
                starts, ends = self.offsets[buckets], self.offsets[buckets + 1]
                q_out.append(np.repeat(hit // m + lo, ends - starts))
                r_out.append(self.order[_expand_ranges(starts, ends - starts)])
        if not q_out:
            return empty
        return np.concatenate(q_out), np.concatenate(r_out).astype(np.int64)


def substring_bounds(bits: int, n: int) -> list[tuple[int, int]]:
    """Byte ranges of the m substrings: about log2(n) bits each (Norouzi et al.'s choice),
    so that a substring bucket holds about one code."""
    nbytes = bits // 8
    target = max(8.0, log2(max(n, 2)))
    m = int(np.clip(round(bits / target), 1, nbytes))
    edges = np.linspace(0, nbytes, m + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in pairwise(edges)]


class MultiIndex:
    """One HashTable per byte-aligned substring of the codes."""

    def __init__(self, bounds: list[tuple[int, int]], tables: list[HashTable]):
        self.bounds, self.tables = bounds, tables

    @classmethod
    def build(cls, codes: np.ndarray, bounds: list[tuple[int, int]]) -> MultiIndex:
        return cls(bounds, [HashTable.build(codes[:, a:b]) for a, b in bounds])

    @property
    def m(self) -> int:
        return len(self.bounds)

    def shell_masks(self, distance: int) -> int:
        """Probes per query to search every substring at exactly this distance."""
        return sum(comb(8 * (b - a), distance) for a, b in self.bounds)

    def shell(self, queries: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidates with some substring at exactly ``distance``: (query index, row), with
        repeats across substrings."""
        qs, rs = [], []
        for (a, b), table in zip(self.bounds, self.tables, strict=True):
            if distance <= 8 * (b - a):
                q, r = table.probe(
                    np.ascontiguousarray(queries[:, a:b]), flip_masks(8 * (b - a), distance)
                )
                qs.append(q)
                rs.append(r)
        if not qs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(qs), np.concatenate(rs)


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


_ARRAYS = ("codes", "ids")


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
        self._multi: MultiIndex | None = None
        self._flat: faiss.IndexBinaryFlat | None = None
        self._code_words: np.ndarray | None = None

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
        self._multi, self._code_words = None, None
        if self._flat is not None:
            self._flat.add(codes)

    def remove(self, ids: np.ndarray) -> int:
        """Remove the codes with these ids; returns how many were removed."""
        keep = ~np.isin(self.ids, np.asarray(ids, np.int64))
        removed = int((~keep).sum())
        if removed:
            self.codes, self.ids = np.ascontiguousarray(self.codes[keep]), self.ids[keep]
            self._multi, self._flat, self._code_words = None, None, None
        return removed

    @property
    def multi(self) -> MultiIndex:
        if self._multi is None:
            self._multi = MultiIndex.build(self.codes, substring_bounds(self.bits, len(self)))
        return self._multi

    @property
    def flat(self) -> faiss.IndexBinaryFlat:
        if self._flat is None:
            self._flat = faiss.IndexBinaryFlat(self.bits)
            if len(self.codes):
                self._flat.add(np.ascontiguousarray(self.codes))
        return self._flat

    @property
    def code_words(self) -> np.ndarray:
        if self._code_words is None:
            self._code_words = _words(np.asarray(self.codes))
        return self._code_words

    def bucket_sizes(self) -> np.ndarray:
        """How many codes share each distinct code."""
        if not len(self):
            return np.zeros(0, np.int64)
        return np.unique(_void(np.asarray(self.codes)), return_counts=True)[1]

    # -- searching ----------------------------------------------------------------------------

    def _distances(self, queries_words: np.ndarray, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        xor = self.code_words[rows] ^ queries_words[q]
        return np.bitwise_count(xor).sum(axis=1, dtype=np.int32)

    def _probe(self, queries: np.ndarray, keep_probing):
        """Probe shell after shell; yields (distance covered, q, rows, distances) per shell.

        After shell s of every substring, every code within m * (s + 1) - 1 bits has been
        found. ``keep_probing(shell, candidates_so_far)`` decides whether to go on.
        """
        multi, words = self.multi, _words(queries)
        seen = np.zeros(0, np.int64)
        candidates = 0
        for shell in range(self.bits + 1):
            if multi.shell_masks(shell) > MAX_SHELL_MASKS or not keep_probing(shell, candidates):
                return
            q, rows = multi.shell(queries, shell)
            key = np.unique(q * len(self.codes) + rows)
            key = key[~np.isin(key, seen, assume_unique=True)]
            seen = np.union1d(seen, key)
            candidates += len(key)
            q, rows = key // len(self.codes), key % len(self.codes)
            yield multi.m * (shell + 1) - 1, q, rows, self._distances(words, q, rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest codes per query: (distances int32, ids int64), each (nq, k).

        Rows are ordered by distance, then id (ties at the k-th distance may be cut
        differently from a scan); padded with -1 where the index has fewer than k codes.
        """
        queries = check_codes(queries, self.bits, "queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k} must be a positive integer")
        nq, n = len(queries), len(self)
        D = np.full((nq, k), -1, np.int32)
        ID = np.full((nq, k), -1, np.int64)
        if nq == 0 or n == 0:
            return D, ID
        need = min(k, n)
        pending = np.ones(nq, np.bool_)
        found_q, found_d, found_r = [], [], []

        def keep_probing(shell: int, candidates: int) -> bool:
            # Go on while the next shell plus the candidates so far cost less than a scan.
            open_queries = int(pending.sum())
            cost = PROBE_COST * self.multi.shell_masks(shell) * open_queries
            return open_queries > 0 and cost + CANDIDATE_COST * candidates < n * open_queries

        for covered, q, rows, dist in self._probe(queries, keep_probing):
            found_q.append(q)
            found_d.append(dist)
            found_r.append(rows)
            all_q, all_d = np.concatenate(found_q), np.concatenate(found_d)
            within = np.bincount(all_q[all_d <= covered], minlength=nq)
            pending &= within < need
        done = np.flatnonzero(~pending)
        if len(done):
            q, d, r = (np.concatenate(x) for x in (found_q, found_d, found_r))
            sel = ~pending[q]
            Dp, Ip = _pad_topk(q[sel], d[sel], self.ids[r[sel]], nq, k)
            D[done], ID[done] = Dp[done], Ip[done]
        rest = np.flatnonzero(pending)
        if len(rest):
            D[rest], ID[rest] = self._scan_knn(queries[rest], k)
        return D, ID

    def _scan_knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        kk = min(k, len(self))
        dist, pos = self.flat.search(queries, kk)
        valid = pos >= 0
        qidx = np.repeat(np.arange(len(queries)), kk)[valid.ravel()]
        # FAISS orders ties arbitrarily; re-sort by (distance, id) so answers are deterministic.
        return _pad_topk(qidx, dist[valid], self.ids[pos[valid]], len(queries), k)

    def within(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every code within ``radius`` bits of each query, CSR-style like faiss range_search.

        Returns ``lims`` (nq + 1,), ``distances`` int32 and ``ids`` int64: the answers of query
        i are ``ids[lims[i]:lims[i + 1]]``, ordered by distance, then id.
        """
        queries = check_codes(queries, self.bits, "queries")
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
            raise ValueError(f"radius={radius} must be an integer between 0 and bits={self.bits}")
        if not 0 <= radius <= self.bits:
            raise ValueError(f"radius={radius} must be an integer between 0 and bits={self.bits}")
        nq, n = len(queries), len(self)
        if nq == 0 or n == 0:
            return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        last_shell = radius // self.multi.m
        shells = range(last_shell + 1)
        probes = sum(self.multi.shell_masks(s) for s in shells)
        if max(self.multi.shell_masks(s) for s in shells) <= MAX_SHELL_MASKS and (
            PROBE_COST * probes < n
        ):
            parts = list(self._probe(queries, lambda shell, _: shell <= last_shell))
            q, r, d = (np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))
            near = d <= radius
            q, d, r = q[near], d[near], r[near]
        else:
            # FAISS binary range search keeps distances strictly below its radius.
            lims, d, r = self.flat.range_search(queries, radius + 1)
            q = np.repeat(np.arange(nq), np.diff(lims.astype(np.int64)))
            d = d.astype(np.int32)
        ids = self.ids[r]
        order = _grouped_order(q, d, ids)
        lims = np.searchsorted(q[order], np.arange(nq + 1)).astype(np.int64)
        return lims, d[order].astype(np.int32), ids[order]

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write codes, ids and the substring tables as .npy files plus a config.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"codes": self.codes, "ids": self.ids}
        for j, table in enumerate(self.multi.tables):
            arrays.update(
                {
                    f"table{j}_keys": table.keys,
                    f"table{j}_offsets": table.offsets,
                    f"table{j}_order": table.order,
                }
            )
        for name, array in arrays.items():
            np.save(path / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        config = {"bits": self.bits, "count": len(self), "substrings": self.multi.bounds}
        (path / "config.json").write_text(json.dumps(config))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> HammingIndex:
        """Load a saved index; with ``mmap`` the arrays are memory-mapped read-only."""
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        mode = "r" if mmap else None

        def load_array(name: str) -> np.ndarray:
            return np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False)

        index = cls(config["bits"])
        index.codes = check_codes(load_array("codes"), index.bits)
        index.ids = load_array("ids")
        if len(index.ids) != config["count"] or len(index.codes) != config["count"]:
            raise ValueError(f"{path}: config.json says {config['count']} codes, arrays disagree")
        bounds = [tuple(b) for b in config["substrings"]]
        tables = [
            HashTable(
                load_array(f"table{j}_keys"),
                load_array(f"table{j}_offsets"),
                load_array(f"table{j}_order"),
            )
            for j in range(len(bounds))
        ]
        index._multi = MultiIndex(bounds, tables)
        return index
