"""Live updates: add, replace and delete documents, atomically."""

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_embeddings

from indexer import TrainConfig, build_index
from indexer.cli import main
from retrieval import Index
from retrieval.store import DocumentStore

FAST = TrainConfig(max_epochs=10, device="cpu")


@pytest.fixture
def index(tmp_path):
    x, _ = make_embeddings(300, dim=32)
    docs = [{"id": f"d{i}", "text": f"text {i}", "n": i} for i in range(200)]
    built = build_index(tmp_path / "idx", docs, embeddings=x[:200], bits=16, config=FAST)
    built.spare = x[200:]  # vectors not yet in the index
    return built


def test_added_documents_are_found_and_persist(index):
    new = index.spare[:10]
    assert index.add(embeddings=new, ids=[f"n{i}" for i in range(10)]) == 10
    assert len(index) == 210
    res = index.search_embeddings(new, k=1, rescore=50)
    assert [row[0] for row in res.ids] == [f"n{i}" for i in range(10)]
    assert (res.distances[:, 0] == 0).all()
    reopened = Index.open(index.path)
    assert len(reopened) == 210 and reopened.verify() == []
    assert reopened.search_embeddings(new[:3], k=1, rescore=50).ids[:, 0].tolist() == [
        "n0",
        "n1",
        "n2",
    ]


def test_an_existing_id_is_replaced(index):
    old_vector = np.asarray(index.embeddings[5], np.float32)
    index.add(embeddings=index.spare[:1], ids=["d5"])
    assert len(index) == 200
    hit = index.search_embeddings(index.spare[:1], k=1, rescore=50).hits(0)[0]
    assert hit.id == "d5" and hit.distance == 0 and hit.text == ""
    # The old version's row is gone: over the whole ball, d5 appears once.
    ball = index.within_embeddings(old_vector[None], radius=16)
    assert list(ball.ids).count("d5") == 1


def test_deleted_documents_never_come_back(index):
    missing = index.delete(["d1", "d2", "nope"])
    assert missing == ["nope"] and len(index) == 198
    x = np.asarray(index.embeddings[:3], np.float32)
    everything = index.within_embeddings(x, radius=16)
    assert not {"d1", "d2"} & set(everything.ids)
    assert len(everything.ids) == 3 * 198
    assert index.store.rows_for(["d1", "d2"]) == {}
    reopened = Index.open(index.path)
    assert len(reopened) == 198 and not {"d1", "d2"} & set(
        reopened.search_embeddings(x, k=198).ids.ravel()
    )


def test_an_interrupted_update_leaves_the_index_as_it_was(index, monkeypatch):
    before = index.search_embeddings(index.spare[:5], k=3).ids

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(DocumentStore, "replace", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        index.add(embeddings=index.spare[:5], ids=list("abcde"))
    assert len(index) == 200
    assert np.array_equal(index.search_embeddings(index.spare[:5], k=3).ids, before)
    monkeypatch.undo()
    reopened = Index.open(index.path)
    assert len(reopened) == 200 and reopened.verify() == []
    assert sorted(p.name for p in index.path.parent.iterdir()) == ["idx"]


def test_bad_additions_are_refused(index):
    with pytest.raises(ValueError, match="dimension 8"):
        index.add(embeddings=np.ones((2, 8), np.float32), ids=["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        index.add(embeddings=np.full((1, 32), np.nan, np.float32), ids=["a"])
    with pytest.raises(ValueError, match="needs ids"):
        index.add(embeddings=index.spare[:1])
    assert len(index) == 200


def test_cli_add_and_delete(sample_index, tmp_path):
    import shutil

    path = tmp_path / "idx"
    shutil.copytree(sample_index.path, path)
    corpus = tmp_path / "more.jsonl"
    corpus.write_text(
        '{"id": "new-1", "text": "Quantum computers use qubits.", "topic": "programming"}\n'
        '{"id": "travel-01", "text": "Book trains early for cheap seats.", "topic": "travel"}\n'
    )
    result = CliRunner().invoke(main, ["-q", "add", str(path), str(corpus)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 documents (1 new, 1 replaced); the index has 161" in result.output
    query = CliRunner().invoke(
        main,
        [
            "query",
            str(path),
            "qubits and quantum computing",
            "-k",
            "1",
            "--rescore",
            "20",
            "--json",
        ],
    )
    assert '"id": "new-1"' in query.output
    result = CliRunner().invoke(main, ["-q", "delete", str(path), "new-1", "ghost"])
    assert result.exit_code == 0
    assert "deleted 1 documents; the index has 160" in result.output
    assert "not found: ghost" in result.output


def test_drift_then_retrain(index):
    assert index.info()["drift"] == {"added_since_training": 0}
    far = np.random.default_rng(3).normal(size=(20, 32)).astype(np.float32)
    index.add(embeddings=far, ids=[f"far{i}" for i in range(20)])
    drift = index.info()["drift"]
    assert drift["added_since_training"] == 20
    assert 0 <= drift["bit_balance_shift"] <= 1
    assert drift["new_to_nearest_trained"] >= 0 and drift["trained_to_nearest_trained"] >= 0
    before = np.asarray(index.hamming.codes).copy()[:120]
    from indexer.update import retrain_index

    index.delete([f"d{i}" for i in range(0, 200, 2)])
    kept = {d: index.store.get([r])[r][2] for d, r in index.store.rows_for(["d1", "far3"]).items()}
    retrain_index(index, TrainConfig(max_epochs=5, device="cpu", seed=1))
    assert len(index) == 120 and index.info()["drift"] == {"added_since_training": 0}
    # Compacted: rows 0..n-1, one embedding per live document, documents intact.
    assert sorted(np.asarray(index.hamming.ids).tolist()) == list(range(120))
    assert index.embeddings.shape == (120, 32) and index.manifest["next_row"] == 120
    rows = index.store.rows_for(["d1", "far3"])
    assert {d: index.store.get([r])[r][2] for d, r in rows.items()} == kept
    assert not np.array_equal(np.asarray(index.hamming.codes), before)
    assert index.search_embeddings(far[:2], k=1, rescore=30).ids[:, 0].tolist() == ["far0", "far1"]
    assert Index.open(index.path).verify() == []


def test_cli_retrain_and_info_drift(sample_index, tmp_path):
    import shutil

    path = tmp_path / "idx"
    shutil.copytree(sample_index.path, path)
    corpus = tmp_path / "more.jsonl"
    corpus.write_text('{"id": "x1", "text": "Glaciers carve valleys over millennia."}\n')
    assert CliRunner().invoke(main, ["-q", "add", str(path), str(corpus)]).exit_code == 0
    info = CliRunner().invoke(main, ["info", str(path)]).output
    assert "drift       1 documents added since training; bit balance shift" in info
    result = CliRunner().invoke(main, ["-q", "retrain", str(path)])
    assert result.exit_code == 0, result.output
    assert "retrained on 161 documents" in result.output
    assert "drift       0 documents added" in CliRunner().invoke(main, ["info", str(path)]).output
