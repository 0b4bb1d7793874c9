"""Search over an index split into shards by document range, local or served elsewhere.

Every shard holds the same hasher, so a query's code is the same in each; each shard answers
its exact top k (ordered by distance, then row), and the merge keeps the k smallest by
(distance, shard, rank). Shards cover consecutive document ranges in order, so that is the
(distance, row) order of one index over all the documents: the merged answer equals it.

A shard is a local index directory (``LocalShard``) or a ``hashdex serve`` URL
(``RemoteShard``, queried through ``POST /search`` with the query embeddings). A sharded
directory (written by ``indexer.shard.split_index``) has a manifest naming its shards.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from retrieval.embed import Embedder, SentenceTransformerEmbedder, normalize
from retrieval.index import MANIFEST_NAME, Hit, Index, _check_k, _check_texts

SHARDS_FORMAT = "hashdex-shards"


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` holds a sharded directory's manifest (rather than an index's)."""
    try:
        return json.loads((Path(path) / MANIFEST_NAME).read_text()).get("format") == SHARDS_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class Shard(Protocol):
    bits: int

    def search(
        self, embeddings: np.ndarray, k: int, radius: int | None, where: dict | None
    ) -> list[list[Hit]]:
        """Each query's top k hits, ordered by (distance, row)."""


class LocalShard:
    """An index directory on this machine."""

    def __init__(self, index: Index):
        self.index, self.bits = index, index.bits

    def search(self, embeddings, k, radius, where):
        results = self.index.search_embeddings(embeddings, k=k, radius=radius, where=where)
        return [results.hits(i) for i in range(len(results))]

    def close(self) -> None:
        self.index.close()


class RemoteShard:
    """A shard served by ``hashdex serve`` at ``url`` (the API key from ``HASHDEX_API_KEY``
    unless given)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0):
        import httpx

        key = api_key if api_key is not None else os.environ.get("HASHDEX_API_KEY")
        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"X-API-Key": key} if key else {}
        )
        self.bits = int(self._call("GET", "/stats")["bits"])

    def _call(self, method: str, route: str, body: dict | None = None) -> dict:
        response = self.client.request(method, route, json=body)
        if response.status_code != 200:
            raise RuntimeError(
                f"shard {self.url}{route}: HTTP {response.status_code}: {response.text[:200]}"
            )
        return response.json()

    def search(self, embeddings, k, radius, where):
        body = {"embeddings": np.asarray(embeddings).tolist(), "k": k}
        body.update({"radius": radius} if radius is not None else {})
        body.update({"where": where} if where else {})
        answers = self._call("POST", "/search", body)["results"]
        return [[Hit(**hit) for hit in hits] for hits in answers]

    def close(self) -> None:
        self.client.close()


@dataclass
class ShardedResults:
    """Like ``SearchResults``: (n_queries, k) ``ids``, ``distances``, ``scores`` (padded with
    None, -1, NaN), and ``hits(i)``; always in Hamming order."""

    ids: np.ndarray
    distances: np.ndarray
    scores: np.ndarray
    _hits: list[list[Hit]]
    order: Literal["hamming"] = "hamming"

    def __len__(self) -> int:
        return len(self._hits)

    def hits(self, i: int) -> list[Hit]:
        return self._hits[i]


def merge_hits(per_shard: Sequence[list[Hit]], k: int) -> list[Hit]:
    """The k smallest hits by (distance, shard, rank) of per-shard lists sorted by distance."""
    keyed = [
        [(hit.distance, s, rank, hit) for rank, hit in enumerate(hits)]
        for s, hits in enumerate(per_shard)
    ]
    return [entry[3] for entry in itertools.islice(heapq.merge(*keyed), k)]


class ShardedIndex:
    """Shards answering as one index: ``search`` / ``search_embeddings`` like ``Index``'s
    (k, radius, where; re-ranking is not offered across shards)."""

    def __init__(
        self,
        shards: Sequence[Shard],
        embedder: Embedder | None = None,
        embedder_name: str | None = None,
    ):
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        bits = {shard.bits for shard in shards}
        if len(bits) != 1:
            raise ValueError(f"shards disagree on bits: {sorted(bits)}")
        self.shards, self.bits = list(shards), bits.pop()
        self._embedder, self._embedder_name = embedder, embedder_name
        self._pool = ThreadPoolExecutor(len(self.shards), thread_name_prefix="shard")

    @classmethod
    def open(cls, path: str | Path, embedder: Embedder | None = None) -> ShardedIndex:
        """Open a sharded directory: its manifest lists shards as ``{"path": ...}`` (relative
        to it) or ``{"url": ...}``."""
        path = Path(path)
        manifest = json.loads((path / MANIFEST_NAME).read_text())
        if manifest.get("format") != SHARDS_FORMAT:
            raise ValueError(f"{path} is not a sharded hashdex index")
        shards: list[Shard] = []
        for entry in manifest["shards"]:
            if "url" in entry:
                shards.append(RemoteShard(entry["url"]))
            else:
                shards.append(LocalShard(Index.open(path / entry["path"], embedder=embedder)))
        name = (manifest.get("embedder") or {}).get("name")
        return cls(shards, embedder=embedder, embedder_name=name)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()
        self._pool.shutdown()

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed query texts once, here, with the shards' model."""
        if self._embedder is None:
            if not self._embedder_name:
                raise ValueError("this sharded index does not name a model: pass embedder=")
            self._embedder = SentenceTransformerEmbedder(self._embedder_name)
        return normalize(self._embedder.encode(_check_texts(texts))).astype(np.float32)

    def search(self, queries: Sequence[str], k: int = 10, radius=None, where=None):
        return self.search_embeddings(self.embed(queries), k=k, radius=radius, where=where)

    def search_embeddings(
        self,
        embeddings: np.ndarray,
        k: int = 10,
        radius: int | None = None,
        where: dict[str, Any] | None = None,
    ) -> ShardedResults:
        """Each shard's exact top k, in parallel, merged into the top k of all."""
        k = _check_k(k)
        queries = np.atleast_2d(np.asarray(embeddings, np.float32))
        answers = list(
            self._pool.map(lambda shard: shard.search(queries, k, radius, where), self.shards)
        )
        merged = [merge_hits([shard[i] for shard in answers], k) for i in range(len(queries))]
        ids = np.full((len(queries), k), None, dtype=object)
        distances = np.full((len(queries), k), -1, np.int32)
        scores = np.full((len(queries), k), np.nan, np.float32)
        for i, hits in enumerate(merged):
            ids[i, : len(hits)] = [hit.id for hit in hits]
            distances[i, : len(hits)] = [hit.distance for hit in hits]
            scores[i, : len(hits)] = [hit.score for hit in hits]
        return ShardedResults(ids, distances, scores, merged)
