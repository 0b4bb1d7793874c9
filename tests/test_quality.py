"""Retrieval quality on the sample corpus: neighbours share the query's topic."""

import numpy as np

from indexer.evaluate import precision_at_k


def test_hamming_neighbours_share_the_topic_far_above_chance(sample_index):
    docs = sample_index.store.get(range(len(sample_index)))
    labels = np.array([docs[r][2]["topic"] for r in range(len(sample_index))])
    codes = np.asarray(sample_index.hamming.codes)
    p5 = precision_at_k(codes, labels, codes, labels, k=5, exclude_self=True, seed=0)
    sizes = np.unique(labels, return_counts=True)[1]
    chance = (sizes * (sizes - 1)).sum() / (len(labels) * (len(labels) - 1))
    assert chance < 0.1
    assert p5 >= 0.75, f"P@5 = {p5:.3f} (chance {chance:.3f})"


def test_text_query_finds_its_topic(sample_index):
    res = sample_index.search(["which planet has rings of ice"], k=5, rescore=50)
    assert [h.metadata["topic"] for h in res.hits(0)][:3] == ["astronomy"] * 3
