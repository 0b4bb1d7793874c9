"""Retrieval metrics of the semantic hashing literature.

P@k: the share of the k nearest database documents (by Hamming distance, ties broken at
random) whose label equals the query's. Recall@k: overlap of the k retrieved with the exact
float-cosine top k.
"""

from __future__ import annotations

import numpy as np

from retrieval.codes import hamming_distances

_BLOCK = 256


def _hamming_ranking(
    query_codes: np.ndarray, db_codes: np.ndarray, k: int, exclude_self: bool, seed: int
) -> np.ndarray:
    """Indices (nq, k) of the k nearest database codes, ties broken uniformly at random."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(query_codes), k), np.int64)
    for lo in range(0, len(query_codes), _BLOCK):
        d = hamming_distances(query_codes[lo : lo + _BLOCK], db_codes).astype(np.float64)
        d += rng.random(d.shape)  # a uniform tie-break below one bit
        if exclude_self:
            rows = np.arange(len(d))
            d[rows, rows + lo] = np.inf
        top = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, top, 1), axis=1)
        out[lo : lo + _BLOCK] = np.take_along_axis(top, order, 1)
    return out


def precision_at_k(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    k: int = 100,
    exclude_self: bool = False,
    seed: int = 0,
) -> float:
    """Mean share of each query's k Hamming-nearest documents that carry its label.

    ``exclude_self``: queries are the database itself (row i never retrieves row i).
    """
    top = _hamming_ranking(query_codes, db_codes, k, exclude_self, seed)
    return float((np.asarray(db_labels)[top] == np.asarray(query_labels)[:, None]).mean())


def recall_at_k(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_embeddings: np.ndarray,
    db_embeddings: np.ndarray,
    k: int = 10,
    rescore: int | None = None,
    seed: int = 0,
) -> float:
    """Overlap of the k retrieved with the exact float-cosine top k.

    Retrieval is the Hamming top k (random tie-break), or with ``rescore=C`` the Hamming top
    C re-ordered by cosine.
    """
    cosine = query_embeddings @ db_embeddings.T
    exact = np.argpartition(-cosine, k - 1, axis=1)[:, :k]
    top = _hamming_ranking(query_codes, db_codes, rescore or k, False, seed)
    if rescore:
        order = np.argsort(-np.take_along_axis(cosine, top, 1), axis=1)[:, :k]
        top = np.take_along_axis(top, order, 1)
    hits = [len(set(a) & set(b)) for a, b in zip(top.tolist(), exact.tolist(), strict=True)]
    return float(np.mean(hits) / k)
