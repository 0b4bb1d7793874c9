"""The default embedder and the embedding cache."""

import numpy as np
import pytest

from retrieval.embed import (
    DEFAULT_MODEL,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    embed_texts,
    normalize,
    resolve_model,
)


class CountingEmbedder:
    """A deterministic stand-in that counts how many texts it embedded."""

    name, dim = "counting", 4

    def __init__(self):
        self.calls = 0

    def encode(self, texts, batch_size=64, show_progress=False):
        self.calls += len(texts)
        return np.array([[len(t), t.count("a"), 1.0, 0.5] for t in texts], np.float32)


def test_cache_computes_each_text_once(tmp_path):
    cache, model = EmbeddingCache(tmp_path / "c.sqlite"), CountingEmbedder()
    first, computed = embed_texts(model, ["aa", "b", "aa"], cache)
    assert computed == 2 and model.calls == 2
    again, computed = embed_texts(model, ["b", "aa", "ccc"], cache)
    assert computed == 1 and model.calls == 3
    assert np.allclose(again[:2], first[[1, 0]])
    assert np.allclose(np.linalg.norm(again, axis=1), 1)


def test_normalize_keeps_zero_rows():
    out = normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0, 0]]) and out.dtype == np.float32


def test_default_model_is_packaged_and_offline(embedder):
    assert resolve_model(DEFAULT_MODEL).endswith("model")
    vectors = embedder.encode(["a cat sat on the mat", "a kitten on a rug", "stock markets fell"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embedder.count_truncated(["short", "word " * 400]) == 1


def test_unknown_model_fails_with_advice(tmp_path):
    with pytest.raises(OSError, match="needs no download"):
        SentenceTransformerEmbedder(str(tmp_path / "no-such-model")).model  # noqa: B018


def test_a_10_mb_text_is_truncated_to_the_window(embedder):
    big = "word " * (2 * 1024 * 1024)
    assert embedder.count_truncated([big, "short"]) == 1
    assert embedder.encode([big]).shape == (1, 384)
