"""The SQL document store, on SQLite and on a real PostgreSQL server, with identical results.

PostgreSQL tests need ``HASHDEX_TEST_POSTGRES_URL`` (``.ci/run`` installs and starts a local
server and sets it, e.g. ``postgresql+psycopg://hashdex:hashdex@127.0.0.1/hashdex_test``).
"""

import os
import uuid

import numpy as np
import pytest
from helpers import make_embeddings
from sqlalchemy.exc import IntegrityError

from indexer import TrainConfig, build_index
from indexer.update import retrain_index
from retrieval import Index
from retrieval.store import DocumentStore

POSTGRES_URL = os.environ.get("HASHDEX_TEST_POSTGRES_URL")
FAST = TrainConfig(max_epochs=10, device="cpu")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'docs.sqlite'}"
    if not POSTGRES_URL:
        pytest.skip("set HASHDEX_TEST_POSTGRES_URL to a PostgreSQL database (.ci/run does)")
    return POSTGRES_URL


@pytest.fixture
def store(store_url):
    store = DocumentStore(store_url, f"test_{uuid.uuid4().hex[:10]}", create=True)
    yield store
    store.drop()
    store.close()


def _fill(store, n=30):
    rows = list(range(n))
    metadatas = [
        {
            "topic": ["a", "b", "c"][i % 3],
            "year": 2000 + i % 2,
            "score": i / 4,
            "new": i % 5 == 0,
            "tags": ["x"],
            "free": f"v{i}",
        }
        for i in rows
    ]
    store.replace([], rows, [f"d{i}" for i in rows], [f"text {i}" for i in rows], metadatas)
    return metadatas


def test_writes_and_reads(store):
    metadatas = _fill(store)
    assert store.count() == 30
    assert store.get([3, 99]) == {3: ("d3", "text 3", metadatas[3])}
    assert store.rows_for(["d7", "missing", "d7"]) == {"d7": 7}
    store.replace([0, 1], [30], ["d0"], ["new text"], [{"topic": "z"}])
    assert store.count() == 29 and store.rows_for(["d0", "d1"]) == {"d0": 30}
    store.renumber([30, 2], [0, 1])
    assert store.get([0, 1]) == {
        0: ("d0", "new text", {"topic": "z"}),
        1: ("d2", "text 2", metadatas[2]),
    }
    assert store.count() == 29


def test_filters(store):
    _fill(store)
    assert store.rows_where({"topic": "b", "year": 2001}).tolist() == [1, 7, 13, 19, 25]
    assert store.rows_where({"topic": ["a", "c"], "new": True}).tolist() == [0, 5, 15, 20]
    assert store.rows_where({"score": 1.5}).tolist() == [6]
    assert store.rows_where({"topic": "nope"}).tolist() == []
    with pytest.raises(ValueError, match="not a string, number or boolean"):
        store.rows_where({"topic": {"nested": 1}})


def test_metadata_fields_list_few_scalar_values(store):
    _fill(store)
    fields = store.metadata_fields(max_values=10)
    assert fields["topic"] == ["a", "b", "c"]
    assert fields["year"] == [2000, 2001]
    assert fields["new"] == [False, True]
    assert fields["tags"] is None  # not a scalar
    assert fields["free"] is None  # more than 10 values


def test_bulk_insert_in_one_transaction(store):
    n = 12_000  # more than one chunk
    store.replace([], range(n), [f"d{i}" for i in range(n)], ["t"] * n, [{}] * n)
    assert store.count() == n
    with pytest.raises(IntegrityError):  # d5 exists: nothing of the batch is written
        store.replace([], [n, n + 1], ["fresh", "d5"], ["t", "t"], [{}, {}])
    assert store.count() == n and store.rows_for(["fresh"]) == {}


def test_an_index_on_postgresql_answers_as_on_sqlite(tmp_path):
    """Build, search, add, delete and retrain with each store: the same answers."""
    if not POSTGRES_URL:
        pytest.skip("set HASHDEX_TEST_POSTGRES_URL to a PostgreSQL database (.ci/run does)")
    x, labels = make_embeddings(300, dim=32)
    docs = [{"id": f"d{i}", "text": f"doc {i}", "label": int(labels[i])} for i in range(300)]
    answers = []
    for name, url in [("sqlite", None), ("postgresql", POSTGRES_URL)]:
        path = tmp_path / name
        build_index(path, docs[:250], embeddings=x[:250], bits=32, config=FAST, store_url=url)
        with Index.open(path) as index:
            index.add(docs[250:], embeddings=x[250:])
            index.delete(["d3", "d4"])
        with Index.open(path) as index:
            retrain_index(index, FAST)
        with Index.open(path) as index:
            found = index.search_embeddings(x[:20], k=5, where={"label": [1, 2]})
            hits = [index_hits for i in range(20) for index_hits in found.hits(i)]
            answers.append((found.ids.tolist(), found.distances.tolist(), hits))
            assert len(index) == 298 and index.store.count() == 298
            if url:
                assert index.manifest["store"]["table"].startswith("hashdex_")
                index.store.drop()
    assert answers[0] == answers[1]
    assert np.isin(np.asarray(answers[0][0], dtype=object), ["d3", "d4"]).sum() == 0
