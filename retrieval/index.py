"""An index on disk and the query path over it.

``Index.open(path)`` loads the manifest, the hasher, the Hamming tables, the float16
embeddings (memory-mapped) and the document store. A query is embedded, hashed, searched
exactly in Hamming space, optionally re-ranked by cosine, and joined with its documents.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from retrieval.codes import unpack
from retrieval.embed import Embedder, SentenceTransformerEmbedder, normalize
from retrieval.hasher import BinaryAutoencoder
from retrieval.store import DocumentStore, sqlite_url
from retrieval.tables import HammingIndex

FORMAT_VERSION = 1
QUERY_CACHE_SIZE = 1024
MANIFEST_NAME = "manifest.json"
HASHER_DIR, TABLES_DIR, EMBEDDINGS_NAME = "hasher", "tables", "embeddings.npy"


class Hit(NamedTuple):
    id: str
    distance: int
    score: float
    text: str
    metadata: dict


class Neighbourhood(NamedTuple):
    """How a query's Hamming ball fills: ``counts[i, d]`` documents lie exactly ``d`` bits
    from the code of query i (packed in ``codes[i]``), for d = 0..radius."""

    codes: np.ndarray
    counts: np.ndarray


class Outlier(NamedTuple):
    id: str
    error: float
    text: str
    metadata: dict


Fetch = Callable[[np.ndarray], dict[int, tuple[str, str, dict]]]


@dataclass
class SearchResults:
    """k-NN answers as (n_queries, k) arrays, padded where fewer than k were found.

    ``ids`` holds document ids (None where padded), ``distances`` Hamming distances (-1 where
    padded), ``scores`` the similarity used for the final order: the code similarity
    1 - 2 * distance / bits when ``order == "hamming"``, the cosine of the stored embeddings
    when ``order == "cosine"`` (re-ranked). Padded scores are NaN.
    """

    ids: np.ndarray
    distances: np.ndarray
    scores: np.ndarray
    rows: np.ndarray
    order: Literal["hamming", "cosine"]
    _fetch: Fetch

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self, i: int) -> list[Hit]:
        """The answers to query ``i`` with their text and metadata."""
        valid = self.rows[i] >= 0
        docs = self._fetch(self.rows[i][valid])
        return [
            Hit(docs[r][0], int(d), float(s), docs[r][1], docs[r][2])
            for r, d, s in zip(
                self.rows[i][valid], self.distances[i][valid], self.scores[i][valid], strict=True
            )
            if r in docs
        ]


@dataclass
class RangeResults:
    """Every document within a radius, CSR-style like faiss ``range_search``.

    The answers of query i are ``ids[lims[i]:lims[i + 1]]`` (and the same slice of
    ``distances``), ordered by distance.
    """

    lims: np.ndarray
    distances: np.ndarray
    ids: np.ndarray
    rows: np.ndarray
    bits: int
    _fetch: Fetch

    def __len__(self) -> int:
        return len(self.lims) - 1

    def counts(self) -> np.ndarray:
        return np.diff(self.lims)

    def hits(self, i: int) -> list[Hit]:
        lo, hi = self.lims[i], self.lims[i + 1]
        rows, distances = self.rows[lo:hi], self.distances[lo:hi]
        docs = self._fetch(rows)
        return [
            Hit(docs[r][0], int(d), 1 - 2 * int(d) / self.bits, docs[r][1], docs[r][2])
            for r, d in zip(rows, distances, strict=True)
            if r in docs
        ]


def file_checksums(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` but the manifest, by relative path."""
    sums = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        sums[file.relative_to(path).as_posix()] = digest.hexdigest()
    return sums


def _checksum_problems(path: Path, manifest: dict) -> list[str]:
    """``"name: missing"`` / ``"name: checksum mismatch"`` / ``"name: not in the manifest"``."""
    expected = manifest.get("files", {})
    actual = file_checksums(path)
    problems = [f"{name}: missing" for name in expected if name not in actual]
    problems += [
        f"{name}: checksum mismatch"
        for name, digest in expected.items()
        if name in actual and actual[name] != digest
    ]
    problems += [f"{name}: not in the manifest" for name in actual if name not in expected]
    return problems


def _size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Buckets by size in powers of two: ``{"1": n, "2": n, "3-4": n, "5-8": n, ...}``."""
    histogram: dict[str, int] = {}
    if not len(sizes):
        return histogram
    for p in range(int(np.ceil(np.log2(sizes.max()))) + 1):
        lo, hi = (1 << (p - 1)) + 1 if p else 1, 1 << p
        count = int(((sizes >= lo) & (sizes <= hi)).sum())
        histogram[str(lo) if lo == hi else f"{lo}-{hi}"] = count
    return histogram


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer")
    return int(k)


def _check_texts(queries: Sequence[str]) -> list[str]:
    if isinstance(queries, str):
        raise TypeError("queries must be a list of strings, not one string: pass [query]")
    queries = list(queries)
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"every query must be a non-empty string, got {q!r}")
    return queries


class Index:
    """A hashdex index directory, opened for queries."""

    def __init__(
        self,
        path: Path,
        manifest: dict,
        hasher: BinaryAutoencoder,
        hamming: HammingIndex,
        store: DocumentStore,
        embeddings: np.ndarray | None,
        embedder: Embedder | None = None,
    ):
        self.path, self.manifest = path, manifest
        self.hasher, self.hamming, self.store = hasher, hamming, store
        self.embeddings = embeddings
        self._embedder = embedder
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_lock = threading.Lock()

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, mmap: bool = True, embedder: Embedder | None = None) -> Index:
        """Open an index directory written by ``indexer.build_index``."""
        path = Path(path)
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{path} is not a hashdex index: {MANIFEST_NAME} is missing")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{manifest_path} is not valid JSON: {error}") from error
        version = manifest.get("format_version")
        if not isinstance(version, int):
            raise ValueError(f"{manifest_path} has no format_version: not a hashdex index")
        if version > FORMAT_VERSION:
            warnings.warn(
                f"{path} was written by a newer hashdex (format {version}, this reads "
                f"{FORMAT_VERSION}); upgrade hashdex if it fails to load",
                stacklevel=2,
            )
        try:
            hasher = BinaryAutoencoder.load(path / HASHER_DIR)
            hamming = HammingIndex.load(path / TABLES_DIR, mmap=mmap)
            embeddings = None
            if manifest.get("has_embeddings"):
                embeddings = np.load(
                    path / EMBEDDINGS_NAME, mmap_mode="r" if mmap else None, allow_pickle=False
                )
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            damaged = [line.split(":")[0] for line in _checksum_problems(path, manifest)]
            where = (
                f" (files that differ from the manifest: {', '.join(damaged)})" if damaged else ""
            )
            raise ValueError(f"{path}: the index is damaged{where}: {error}") from error
        if hasher.bits != manifest["bits"] or hamming.bits != manifest["bits"]:
            raise ValueError(
                f"{path}: manifest says {manifest['bits']} bits but the hasher has "
                f"{hasher.bits} and the tables {hamming.bits}"
            )
        rows = int(manifest.get("next_row", 0))
        if embeddings is not None and (embeddings.shape != (rows, hasher.input_dim)):
            raise ValueError(
                f"{path / EMBEDDINGS_NAME}: shape {embeddings.shape}, the manifest expects "
                f"({rows}, {hasher.input_dim})"
            )
        store_info = manifest["store"]
        store = DocumentStore(store_info["url"] or sqlite_url(path), store_info["table"])
        return cls(path, manifest, hasher, hamming, store, embeddings, embedder)

    def close(self) -> None:
        self.store.close()

    def reload(self) -> None:
        """Re-read the index from its directory (after another writer changed it)."""
        fresh = Index.open(self.path, embedder=self._embedder)
        self.manifest, self.hasher, self.hamming = fresh.manifest, fresh.hasher, fresh.hamming
        self.store, self.embeddings = fresh.store, fresh.embeddings

    # -- updating -----------------------------------------------------------------------------

    def add(
        self,
        documents: Any = None,
        *,
        embeddings: np.ndarray | None = None,
        ids: Sequence[Any] | None = None,
        **options: Any,
    ) -> int:
        """Add documents (dicts, or a corpus path) or embeddings with ids; an id already in
        the index is replaced. Hashed with the trained hasher; written atomically. Returns
        how many were written. ``options``: text_field, id_field, skip_invalid."""
        from indexer.update import add_documents  # the write path; queries never load it

        return add_documents(self, documents, embeddings=embeddings, ids=ids, **options)

    def delete(self, ids: Sequence[Any]) -> list[str]:
        """Delete documents by id, atomically; returns the ids that were not found."""
        from indexer.update import delete_documents

        return delete_documents(self, ids)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- properties ---------------------------------------------------------------------------

    @property
    def bits(self) -> int:
        return int(self.manifest["bits"])

    @property
    def dim(self) -> int:
        return self.hasher.input_dim

    def __len__(self) -> int:
        return len(self.hamming)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            info = self.manifest.get("embedder")
            if not info:
                raise ValueError(
                    f"{self.path} was built from your own embeddings, so it cannot embed text; "
                    "use search_embeddings(), or open it with Index.open(path, embedder=...)"
                )
            self._embedder = SentenceTransformerEmbedder(info["name"])
        return self._embedder

    # -- encoding -----------------------------------------------------------------------------

    def _check_embeddings(self, embeddings: np.ndarray, name: str = "embeddings") -> np.ndarray:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim == 1:
            embeddings = embeddings[None, :]
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"{name} must have shape (n, {self.dim}) for this index, got {embeddings.shape}"
            )
        if not np.issubdtype(embeddings.dtype, np.floating):
            raise TypeError(f"{name} must be floating point, got dtype {embeddings.dtype}")
        if not np.isfinite(embeddings).all():
            raise ValueError(f"{name} contain NaN or infinite values")
        return normalize(embeddings)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed query texts with the index's model: float32 (n, dim), unit norm.

        The last ``QUERY_CACHE_SIZE`` distinct texts are remembered, so a repeated query
        skips the model.
        """
        texts = _check_texts(texts)
        with self._query_lock:
            return self._embed_cached(texts)

    def _embed_cached(self, texts: list[str]) -> np.ndarray:
        cache = self._query_cache
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            vectors = self._check_embeddings(self.embedder.encode(missing), "query embeddings")
            cache.update(zip(missing, vectors, strict=True))
        for text in texts:
            cache.move_to_end(text)
        vectors = np.stack([cache[t] for t in texts]) if texts else np.zeros((0, self.dim))
        while len(cache) > QUERY_CACHE_SIZE:
            cache.popitem(last=False)
        return vectors.astype(np.float32)

    def encode_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """The learned codes of float embeddings: packed uint8 (n, bits // 8)."""
        return self.hasher.encode(self._check_embeddings(embeddings))

    # -- searching ----------------------------------------------------------------------------

    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        radius: int | None = None,
        rescore: int | None = None,
        where: dict[str, Any] | None = None,
    ) -> SearchResults:
        """The k nearest documents of each query text (see ``search_embeddings``)."""
        vectors = self.embed(queries)
        return self.search_embeddings(vectors, k=k, radius=radius, rescore=rescore, where=where)

    def search_embeddings(
        self,
        embeddings: np.ndarray,
        k: int = 10,
        radius: int | None = None,
        rescore: int | None = None,
        where: dict[str, Any] | None = None,
    ) -> SearchResults:
        """k-NN by exact Hamming distance between the query codes and the documents' codes.

        ``radius``: keep only documents within this many bits. ``rescore=C``: take the C
        nearest by Hamming distance (C >= k) and re-order them by the cosine of the stored
        float embeddings. ``where={"topic": "sports"}``: only documents whose metadata match
        (a list value: any of); exact, by scanning the matching documents' codes.
        """
        k = _check_k(k)
        if radius is not None:
            self._check_radius(radius)
        query = self._check_embeddings(embeddings, "query embeddings")
        codes = self.hasher.encode(query)
        if where:
            allowed = self.store.rows_where(where)
            nearest = partial(self.hamming.search_subset, ids=allowed)
        else:
            nearest = self.hamming.search
        if rescore is None:
            distances, rows = nearest(codes, k)
            scores = np.where(rows >= 0, 1 - 2 * distances / self.bits, np.nan)
            order: Literal["hamming", "cosine"] = "hamming"
        else:
            distances, rows, scores = self._rescored(query, codes, k, _check_k(rescore), nearest)
            order = "cosine"
        if radius is not None:
            far = distances > radius
            rows, distances, scores = self._pad(rows, distances, scores, far)
        return SearchResults(
            ids=self._ids(rows),
            distances=distances.astype(np.int32),
            scores=scores.astype(np.float32),
            rows=rows,
            order=order,
            _fetch=self.store.get,
        )

    def _rescored(self, query, codes, k: int, candidates: int, nearest: Callable):
        if self.embeddings is None:
            raise ValueError(f"{self.path} keeps no float embeddings, so it cannot re-rank")
        if candidates < k:
            raise ValueError(f"rescore={candidates} must be at least k={k}")
        distances, rows = nearest(codes, candidates)
        cosine = np.full(rows.shape, -np.inf, np.float32)
        for i in range(len(rows)):
            valid = rows[i] >= 0
            vectors = np.asarray(self.embeddings[rows[i][valid]], np.float32)
            cosine[i, valid] = vectors @ query[i]
        best = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
        take = np.take_along_axis
        rows, distances = take(rows, best, 1), take(distances, best, 1)
        scores = np.where(rows >= 0, take(cosine, best, 1), np.nan)
        return distances, rows, scores

    @staticmethod
    def _pad(rows, distances, scores, drop):
        """Move the dropped answers to the end of each row as padding."""
        keep_first = np.argsort(drop, axis=1, kind="stable")
        take = np.take_along_axis
        drop = take(drop, keep_first, 1)
        rows = np.where(drop, -1, take(rows, keep_first, 1))
        distances = np.where(drop, -1, take(distances, keep_first, 1))
        scores = np.where(drop, np.nan, take(scores, keep_first, 1))
        return rows, distances, scores

    def _check_radius(self, radius: int) -> int:
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
            raise TypeError(f"radius must be an integer, got {radius!r}")
        if not 0 <= radius <= self.bits:
            raise ValueError(f"radius={radius} must be between 0 and bits={self.bits}")
        return int(radius)

    def _ids(self, rows: np.ndarray) -> np.ndarray:
        """The document ids of table rows (None where padded), from the store."""
        known = self.store.ids(rows[rows >= 0].ravel())
        ids = np.full(rows.shape, None, dtype=object)
        for index in zip(*np.nonzero(rows >= 0), strict=True):
            ids[index] = known.get(int(rows[index]))
        return ids

    def within(self, queries: Sequence[str], radius: int) -> RangeResults:
        """Every document whose code is within ``radius`` bits of each query's code."""
        return self.within_embeddings(self.embed(queries), radius)

    def within_embeddings(self, embeddings: np.ndarray, radius: int) -> RangeResults:
        radius = self._check_radius(radius)
        codes = self.encode_embeddings(embeddings)
        lims, distances, rows = self.hamming.within(codes, radius)
        ids = self._ids(rows)
        return RangeResults(lims, distances, ids, rows, self.bits, self.store.get)

    def neighbourhood(self, queries: Sequence[str], radius: int) -> Neighbourhood:
        """How many documents lie at each Hamming distance 0..radius of each query's code."""
        return self.neighbourhood_embeddings(self.embed(queries), radius)

    def neighbourhood_embeddings(self, embeddings: np.ndarray, radius: int) -> Neighbourhood:
        radius = self._check_radius(radius)
        codes = self.encode_embeddings(embeddings)
        lims, distances, _ = self.hamming.within(codes, radius)
        query_of = np.repeat(np.arange(len(codes)), np.diff(lims))
        width = radius + 1
        counts = np.bincount(query_of * width + distances, minlength=len(codes) * width)
        counts = counts.reshape(len(codes), width)
        return Neighbourhood(codes, counts)

    # -- novelty ------------------------------------------------------------------------------

    def reconstruction_error(self, embeddings: np.ndarray) -> np.ndarray:
        """Novelty of float embeddings: how badly the hasher reconstructs each from its code
        (squared distance of unit vectors, 0..4). Unusual documents score high."""
        return self.hasher.reconstruction_error(self._check_embeddings(embeddings))

    def novelty(self, texts: Sequence[str]) -> np.ndarray:
        """``reconstruction_error`` of texts, embedded with the index's model."""
        return self.reconstruction_error(self.embed(texts))

    def outliers(self, n: int = 10) -> list[Outlier]:
        """The ``n`` stored documents the hasher reconstructs worst, worst first."""
        n = _check_k(n)
        if self.embeddings is None:
            raise ValueError(f"{self.path} keeps no float embeddings, so it cannot score them")
        rows = np.sort(np.asarray(self.hamming.ids))
        errors = self.hasher.reconstruction_error(np.asarray(self.embeddings[rows], np.float32))
        worst = np.argsort(-errors, kind="stable")[:n]
        docs = self.store.get(rows[worst])
        return [
            Outlier(docs[r][0], float(e), docs[r][1], docs[r][2])
            for r, e in zip(rows[worst].tolist(), errors[worst], strict=True)
            if r in docs
        ]

    # -- reporting ----------------------------------------------------------------------------

    def info(self) -> dict:
        """Bits, counts, model, bit balance, bucket occupancy and metadata fields of the
        index."""
        codes = np.asarray(self.hamming.codes)
        balance = unpack(codes, self.bits).mean(axis=0) if len(codes) else np.zeros(self.bits)
        sizes = self.hamming.bucket_sizes()
        return {
            "path": str(self.path),
            "format_version": self.manifest["format_version"],
            "bits": self.bits,
            "documents": len(self),
            "embedder": self.manifest.get("embedder"),
            "store": self.manifest["store"]["url"] or sqlite_url(self.path),
            "float_embeddings": self.embeddings is not None,
            "bit_balance": {
                "mean": float(balance.mean()),
                "min": float(balance.min()),
                "max": float(balance.max()),
                "per_bit": [round(float(b), 4) for b in balance],
            },
            "buckets": {
                "count": len(sizes),
                "largest": int(sizes.max()) if len(sizes) else 0,
                "mean_size": float(sizes.mean()) if len(sizes) else 0.0,
                "singletons": int((sizes == 1).sum()),
                "size_histogram": _size_histogram(sizes),
            },
            "metadata_fields": self.store.metadata_fields(),
            "training": self.manifest.get("training"),
            "drift": self.drift(),
        }

    def drift(self, sample: int = 1000) -> dict:
        """How the codes of documents added since training differ from the training set's:
        the mean shift of per-bit balance, and the mean distance to the nearest training
        code of (a sample of) the new documents against that of training documents
        themselves (leave-one-out). Growing numbers say: ``hashdex retrain``."""
        trained = int(self.manifest.get("trained_rows", self.manifest.get("next_row", 0)))
        ids, codes = np.asarray(self.hamming.ids), np.asarray(self.hamming.codes)
        new, old = ids >= trained, ids < trained
        report: dict = {"added_since_training": int(new.sum())}
        if not new.any() or old.sum() < 2:
            return report
        bits_new = unpack(codes[new], self.bits).mean(axis=0)
        bits_old = unpack(codes[old], self.bits).mean(axis=0)
        report["bit_balance_shift"] = float(np.abs(bits_new - bits_old).mean())
        rng = np.random.default_rng(0)
        old_codes = codes[old]
        reference = HammingIndex(self.bits)
        reference.add(old_codes, np.arange(len(old_codes)))
        # An exact scan of the sample: building the substring tables would cost more.
        nearest = partial(reference.search_subset, ids=reference.ids)
        pick_new = rng.permutation(int(new.sum()))[:sample]
        pick_old = rng.permutation(len(old_codes))[:sample]
        report["new_to_nearest_trained"] = float(nearest(codes[new][pick_new], 1)[0].mean())
        # The training codes' own nearest neighbour other than themselves: second hit.
        report["trained_to_nearest_trained"] = float(
            nearest(old_codes[pick_old], 2)[0][:, 1].mean()
        )
        return report

    def verify(self) -> list[str]:
        """What is wrong with the index on disk: files whose checksum differs from the
        manifest's, and a format newer than this hashdex reads (empty when intact)."""
        problems = _checksum_problems(self.path, self.manifest)
        if self.manifest["format_version"] > FORMAT_VERSION:
            problems.append(
                f"{MANIFEST_NAME}: format {self.manifest['format_version']} is newer than "
                f"this hashdex reads ({FORMAT_VERSION})"
            )
        return problems
