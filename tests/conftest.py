"""Shared fixtures: an isolated embedding cache, the default model, the sample-corpus index."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample.jsonl"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Point the embedding cache at a per-run folder, so tests never touch the user's."""
    previous = os.environ.get("HASHDEX_CACHE_DIR")
    os.environ["HASHDEX_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ["HASHDEX_CACHE_DIR"]
    else:
        os.environ["HASHDEX_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def embedder():
    """The offline default model, loaded once per test run."""
    from retrieval.embed import SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder()
    model.model  # noqa: B018 (load now, once)
    return model


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, embedder):
    """The sample corpus indexed at 64 bits with the default model."""
    from indexer import build_index

    return build_index(tmp_path_factory.mktemp("sample") / "idx", SAMPLE, embedder=embedder)


@pytest.fixture
def index_copy(sample_index, tmp_path):
    """A private copy of the sample index, for tests that change it."""
    path = tmp_path / "idx"
    shutil.copytree(sample_index.path, path)
    return path
