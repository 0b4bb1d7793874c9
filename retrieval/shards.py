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


class Answers(Protocol):
    """A shard's answers: (n_queries, k) ``ids``, ``distances`` (-1 padded), ``scores``, each
    row ordered by (distance, row); ``hits(i)`` fetches query i's documents."""

    ids: np.ndarray
    distances: np.ndarray
    scores: np.ndarray

    def hits(self, i: int) -> list[Hit]: ...


class Shard(Protocol):
    bits: int

    def search(
        self, embeddings: np.ndarray, k: int, radius: int | None, where: dict | None
    ) -> Answers: ...

    def close(self) -> None: ...


class LocalShard:
    """An index directory on this machine."""

    def __init__(self, index: Index):
        self.index, self.bits = index, index.bits

    def search(self, embeddings, k, radius, where) -> Answers:
        return self.index.search_embeddings(embeddings, k=k, radius=radius, where=where)

    def close(self) -> None:
        self.index.close()


@dataclass
class _Fetched:
    """Answers that arrived with their documents (from a served shard)."""

    ids: np.ndarray
    distances: np.ndarray
    scores: np.ndarray
    documents: list[list[Hit]]

    def hits(self, i: int) -> list[Hit]:
        return self.documents[i]


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

    def search(self, embeddings, k, radius, where) -> Answers:
        body = {"embeddings": np.asarray(embeddings).tolist(), "k": k}
        body.update({"radius": radius} if radius is not None else {})
        body.update({"where": where} if where else {})
        documents = [
            [Hit(**hit) for hit in hits] for hits in self._call("POST", "/search", body)["results"]
        ]
        shape = (len(documents), k)
        ids = np.full(shape, None, dtype=object)
        distances, scores = np.full(shape, -1, np.int32), np.full(shape, np.nan, np.float32)
        for i, hits in enumerate(documents):
            ids[i, : len(hits)] = [hit.id for hit in hits]
            distances[i, : len(hits)] = [hit.distance for hit in hits]
            scores[i, : len(hits)] = [hit.score for hit in hits]
        return _Fetched(ids, distances, scores, documents)

    def close(self) -> None:
        self.client.close()


@dataclass
class ShardedResults:
    """Like ``SearchResults``: (n_queries, k) ``ids``, ``distances``, ``scores`` (padded with
    None, -1, NaN), and ``hits(i)``, which fetches from the shards; Hamming order."""

    ids: np.ndarray
    distances: np.ndarray
    scores: np.ndarray
    shard: np.ndarray  # which shard each answer came from (-1 where padded)
    rank: np.ndarray  # its rank in that shard's answers
    _answers: list[Answers]
    order: Literal["hamming"] = "hamming"

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self, i: int) -> list[Hit]:
        fetched: dict[int, list[Hit]] = {}
        found = []
        for s, r in zip(self.shard[i], self.rank[i], strict=True):
            if s < 0:
                break
            if s not in fetched:
                fetched[s] = self._answers[s].hits(i)
            found.append(fetched[s][r])
        return found


def merge(answers: Sequence[Answers], k: int) -> ShardedResults:
    """The k nearest of all shards' answers for each query, by (distance, shard, rank):
    one stable sort of the shards' answers laid side by side, shard after shard."""
    distances = np.concatenate([a.distances for a in answers], axis=1).astype(np.int64)
    width = answers[0].distances.shape[1]
    padded = distances < 0
    order = np.argsort(np.where(padded, np.iinfo(np.int64).max, distances), axis=1, kind="stable")
    order = order[:, :k]
    take = np.take_along_axis
    valid = ~take(padded, order, 1)
    ids = np.where(valid, take(np.concatenate([a.ids for a in answers], axis=1), order, 1), None)
    scores = np.concatenate([a.scores for a in answers], axis=1)
    return ShardedResults(
        ids=ids,
        distances=np.where(valid, take(distances, order, 1), -1).astype(np.int32),
        scores=np.where(valid, take(scores, order, 1), np.nan).astype(np.float32),
        shard=np.where(valid, order // width, -1),
        rank=np.where(valid, order % width, -1),
        _answers=list(answers),
    )


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
        answers = self._pool.map(lambda shard: shard.search(queries, k, radius, where), self.shards)
        return merge(list(answers), k)
