"""Property-based fuzzing of the corpus readers: any input gives documents or a CorpusError."""

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.corpus import CorpusError, read_corpus

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def _read(suffix: str, data: bytes, skip_invalid: bool):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"corpus{suffix}"
        path.write_bytes(data)
        return read_corpus(path, skip_invalid=skip_invalid)


LONG = settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BYTES = {
    "data": st.binary(max_size=400),
    "suffix": st.sampled_from([".jsonl", ".json", ".csv", ".tsv"]),
}


def arbitrary_bytes_never_crash_a_reader(data, suffix):
    try:
        corpus = _read(suffix, data, skip_invalid=False)
    except CorpusError as error:
        assert error.problems
    else:
        assert all(d.text.strip() for d in corpus.documents)
    corpus = _read(suffix, data, skip_invalid=True)  # never raises: it reports instead
    assert len({d.id for d in corpus.documents}) == len(corpus.documents)


RECORDS = {
    "records": st.lists(
        st.dictionaries(st.sampled_from(["id", "text", "x"]), json_values), max_size=8
    )
}


def arbitrary_records_are_validated(records):
    lines = "\n".join(json.dumps(r) for r in records).encode()
    try:
        corpus = _read(".jsonl", lines, skip_invalid=False)
    except CorpusError:
        return
    for doc in corpus.documents:
        assert isinstance(doc.text, str) and doc.text.strip() and isinstance(doc.id, str)


# Each property runs briefly in the fast suite and at length under the slow marker.
test_arbitrary_bytes_never_crash_a_reader = FAST(
    given(**BYTES)(arbitrary_bytes_never_crash_a_reader)
)
test_arbitrary_records_are_validated = FAST(given(**RECORDS)(arbitrary_records_are_validated))
test_long_fuzz_of_bytes = pytest.mark.slow(
    LONG(given(**BYTES)(arbitrary_bytes_never_crash_a_reader))
)
test_long_fuzz_of_records = pytest.mark.slow(
    LONG(given(**RECORDS)(arbitrary_records_are_validated))
)
