"""Search structures over packed codes: a hash table probed by bit flips, and FAISS exact scan.

``HammingIndex`` is the code-level index: give it packed uint8 codes and int64 ids, ask for
exact k nearest neighbours or every code within a radius. Per batch it chooses between
probing the hash table shell by shell (cheap while the Hamming ball is small and dense with
hits) and an exact FAISS ``IndexBinaryFlat`` scan, and both give brute-force answers.
"""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import faiss
import numpy as np

from retrieval.codes import ball_size, check_bits, check_codes, flip_masks

# One hash-table probe (a binary search over bucket keys) costs about as much as scanning this
# many codes linearly; measured on x86-64 with faiss-cpu, 64-bit codes (benchmarks/query_speed.py).
PROBE_COST_IN_SCANNED_CODES = 2.0
# Upper bound on query-mask pairs materialised at once while probing (memory: pairs * bytes).
_MAX_PAIRS = 1 << 21
# Shells of the Hamming ball with more masks than this are never probed, whatever the cost model.
MAX_SHELL_MASKS = 1 << 17


def _void(codes: np.ndarray) -> np.ndarray:
    """View (n, nbytes) uint8 codes as n opaque byte strings that sort and compare as keys."""
    return np.ascontiguousarray(codes).view(f"V{codes.shape[1]}").ravel()


def _expand_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``range(s, s + c)`` for every pair, vectorised."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total) - offsets)


class HashTable:
    """Exact-code buckets: unique codes sorted as byte strings, CSR lists of row positions."""

    def __init__(self, keys: np.ndarray, offsets: np.ndarray, order: np.ndarray):
        self.keys = keys  # (n_buckets, nbytes) uint8, sorted
        self.offsets = offsets  # (n_buckets + 1,) int64 into order
        self.order = order  # (n,) int64 row positions grouped by bucket
        self._keys_void = _void(keys) if len(keys) else np.zeros(0, f"V{keys.shape[1]}")

    @classmethod
    def build(cls, codes: np.ndarray) -> HashTable:
        void = _void(codes)
        order = np.argsort(void, kind="stable").astype(np.int64)
        sorted_void = void[order]
        if len(order):
            first = np.concatenate([[True], sorted_void[1:] != sorted_void[:-1]])
        else:
            first = np.zeros(0, np.bool_)
        starts = np.flatnonzero(first)
        offsets = np.append(starts, len(order)).astype(np.int64)
        keys = np.ascontiguousarray(codes[order[starts]]) if len(order) else codes[:0].copy()
        return cls(keys, offsets, order)

    @property
    def n_buckets(self) -> int:
        return len(self.keys)

    def bucket_sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def probe(self, queries: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose code equals ``query ^ mask`` for some mask: (query index, row position)."""
        nq, m = len(queries), len(masks)
        if nq == 0 or m == 0 or self.n_buckets == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        q_out, r_out = [], []
        step = max(1, _MAX_PAIRS // m)
        for lo in range(0, nq, step):
            block = queries[lo : lo + step]
            cand = _void((block[:, None, :] ^ masks[None, :, :]).reshape(-1, queries.shape[1]))
            pos = np.searchsorted(self._keys_void, cand)
            np.minimum(pos, self.n_buckets - 1, out=pos)
            hit = np.flatnonzero(self._keys_void[pos] == cand)
            if not len(hit):
                continue
            buckets = pos[hit]
            starts, counts = self.offsets[buckets], np.diff(self.offsets)[buckets]
            q_out.append(np.repeat(hit // m + lo, counts))
            r_out.append(self.order[_expand_ranges(starts, counts)])
        if not q_out:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(q_out), np.concatenate(r_out)


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
        self._table: HashTable | None = None
        self._flat: faiss.IndexBinaryFlat | None = None

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
        self._table = None
        if self._flat is not None:
            self._flat.add(codes)

    def remove(self, ids: np.ndarray) -> int:
        """Remove the codes with these ids; returns how many were removed."""
        keep = ~np.isin(self.ids, np.asarray(ids, np.int64))
        removed = int((~keep).sum())
        if removed:
            self.codes, self.ids = np.ascontiguousarray(self.codes[keep]), self.ids[keep]
            self._table, self._flat = None, None
        return removed

    @property
    def table(self) -> HashTable:
        if self._table is None:
            self._table = HashTable.build(self.codes)
        return self._table

    @property
    def flat(self) -> faiss.IndexBinaryFlat:
        if self._flat is None:
            self._flat = faiss.IndexBinaryFlat(self.bits)
            if len(self.codes):
                self._flat.add(np.ascontiguousarray(self.codes))
        return self._flat

    # -- searching ----------------------------------------------------------------------------

    def _probe_affordable(self, spent: int, distance: int) -> bool:
        """Is probing the next shell cheaper than one exact scan of every code?"""
        shell = comb(self.bits, distance)
        return shell <= MAX_SHELL_MASKS and (
            (spent + shell) * PROBE_COST_IN_SCANNED_CODES <= len(self)
        )

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest codes per query: (distances int32, ids int64), each (nq, k).

        Rows are ordered by distance, then id; padded with -1 where the index has fewer
        than k codes.
        """
        queries = check_codes(queries, self.bits, "queries")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k} must be a positive integer")
        nq = len(queries)
        D = np.full((nq, k), -1, np.int32)
        ID = np.full((nq, k), -1, np.int64)
        if nq == 0 or len(self) == 0:
            return D, ID
        pending = np.arange(nq)
        found_q, found_d, found_r = [], [], []
        counts = np.zeros(nq, np.int64)
        spent, distance = 0, 0
        while len(pending) and distance <= self.bits and self._probe_affordable(spent, distance):
            q, rows = self.table.probe(queries[pending], flip_masks(self.bits, distance))
            q = pending[q]
            found_q.append(q)
            found_d.append(np.full(len(q), distance, np.int32))
            found_r.append(rows)
            counts += np.bincount(q, minlength=nq)
            spent += comb(self.bits, distance)
            distance += 1
            # Every code within `distance - 1` bits is found: k of them are the exact top k.
            pending = pending[counts[pending] < min(k, len(self))]
        done = np.setdiff1d(np.arange(nq), pending)
        if len(done) and found_q:
            q, d, r = (np.concatenate(x) for x in (found_q, found_d, found_r))
            sel = np.isin(q, done)
            Dp, Ip = _pad_topk(q[sel], d[sel], self.ids[r[sel]], nq, k)
            D[done], ID[done] = Dp[done], Ip[done]
        if len(pending):
            D[pending], ID[pending] = self._scan_knn(queries[pending], k)
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
        if not isinstance(radius, (int, np.integer)) or not 0 <= radius <= self.bits:
            raise ValueError(f"radius={radius} must be an integer between 0 and bits={self.bits}")
        nq = len(queries)
        if nq == 0 or len(self) == 0:
            return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        widest_shell = comb(self.bits, min(radius, self.bits // 2))
        if widest_shell <= MAX_SHELL_MASKS and (
            ball_size(self.bits, radius) * PROBE_COST_IN_SCANNED_CODES <= len(self)
        ):
            qs, ds, rs = [], [], []
            for distance in range(radius + 1):
                q, rows = self.table.probe(queries, flip_masks(self.bits, distance))
                qs.append(q)
                ds.append(np.full(len(q), distance, np.int32))
                rs.append(rows)
            q, d, r = (np.concatenate(x) for x in (qs, ds, rs))
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
        """Write codes, ids and the hash table as .npy files plus a config.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        table = self.table
        arrays = {
            "codes": self.codes,
            "ids": self.ids,
            "table_keys": table.keys,
            "table_offsets": table.offsets,
            "table_order": table.order,
        }
        for name, array in arrays.items():
            np.save(path / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        (path / "config.json").write_text(json.dumps({"bits": self.bits, "count": len(self)}))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> HammingIndex:
        """Load a saved index; with ``mmap`` the arrays are memory-mapped read-only."""
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        mode = "r" if mmap else None
        arrays = {
            name: np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
            for name in ("codes", "ids", "table_keys", "table_offsets", "table_order")
        }
        index = cls(config["bits"])
        index.codes = check_codes(arrays["codes"], index.bits)
        index.ids = arrays["ids"]
        if len(index.ids) != config["count"] or len(index.codes) != config["count"]:
            raise ValueError(f"{path}: config.json says {config['count']} codes, arrays disagree")
        index._table = HashTable(
            arrays["table_keys"], arrays["table_offsets"], arrays["table_order"]
        )
        return index
