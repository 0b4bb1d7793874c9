"""The SQL document store: writes, reads, filters and the metadata fields it reports."""

import numpy as np
import pytest

from retrieval.store import DocumentStore


@pytest.fixture
def store(tmp_path):
    store = DocumentStore(f"sqlite:///{tmp_path / 'docs.sqlite'}", create=True)
    yield store
    store.close()


def _fill(store, n=30):
    rows = list(range(n))
    metadatas = [
        {"topic": ["a", "b", "c"][i % 3], "year": 2000 + i % 2, "tags": ["x"], "free": f"v{i}"}
        for i in rows
    ]
    store.replace([], rows, [f"d{i}" for i in rows], [f"text {i}" for i in rows], metadatas)


def test_metadata_fields_list_few_scalar_values(store):
    _fill(store)
    fields = store.metadata_fields(max_values=10)
    assert fields["topic"] == ["a", "b", "c"]
    assert fields["year"] == [2000, 2001]
    assert fields["tags"] is None  # not a scalar
    assert fields["free"] is None  # more than 10 values
    assert np.array_equal(store.rows_where({"topic": "b", "year": 2001}), [1, 7, 13, 19, 25])
