"""Export to other backends, and the LangChain retriever."""

import json

import numpy as np
import pyarrow.parquet as pq
from click.testing import CliRunner

from indexer.cli import main
from retrieval.langchain import HashdexRetriever


def _live_rows(index):
    order = np.argsort(np.asarray(index.hamming.ids))
    return np.asarray(index.hamming.ids)[order], np.asarray(index.hamming.codes)[order]


def test_export_npy(sample_index, tmp_path):
    out = tmp_path / "npy"
    result = CliRunner().invoke(main, ["export", str(sample_index.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    ids = np.load(out / "ids.npy", allow_pickle=False)
    codes = np.load(out / "codes.npy", allow_pickle=False)
    metadata = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    rows, expected = _live_rows(sample_index)
    docs = sample_index.store.get(rows)
    assert ids.tolist() == [docs[r][0] for r in rows.tolist()]
    assert np.array_equal(codes, expected) and codes.dtype == np.uint8
    assert metadata[0] == docs[int(rows[0])][2] and len(metadata) == 160


def test_export_parquet(sample_index, tmp_path):
    out = tmp_path / "codes.parquet"
    args = ["export", str(sample_index.path), "--format", "parquet", "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    table = pq.read_table(out)
    assert table.num_rows == 160 and table.column_names == ["id", "code", "metadata"]
    _, expected = _live_rows(sample_index)
    codes = np.frombuffer(b"".join(table.column("code").to_pylist()), np.uint8).reshape(160, 8)
    assert np.array_equal(codes, expected)
    assert json.loads(table.column("metadata")[0].as_py())["topic"]


def test_langchain_retriever(sample_index):
    retriever = HashdexRetriever(index=sample_index, k=3, rescore=30, where={"topic": "music"})
    documents = retriever.invoke("an orchestra playing a symphony")
    assert len(documents) == 3
    assert all(d.metadata["topic"] == "music" for d in documents)
    first = documents[0]
    assert first.id == first.metadata["id"] and first.page_content
    assert {"hamming_distance", "score"} <= set(first.metadata)
