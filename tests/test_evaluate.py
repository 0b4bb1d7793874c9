"""Metrics against hand-made cases, the baselines, and `hashdex eval` end to end."""

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLE
from helpers import make_embeddings

from indexer import evaluate
from indexer.cli import main
from retrieval.codes import pack


def test_precision_counts_matching_labels():
    db = pack(np.array([[1] * 16, [1] * 15 + [0], [0] * 16, [0] * 15 + [1]]))
    labels = np.array(["a", "a", "b", "b"])
    query = pack(np.array([[1] * 16]))
    assert evaluate.precision_at_k(query, np.array(["a"]), db, labels, k=2) == 1.0
    assert evaluate.precision_at_k(query, np.array(["b"]), db, labels, k=2) == 0.0
    assert evaluate.precision_at_k(db, labels, db, labels, k=1, exclude_self=True) == 1.0


def test_recall_is_one_when_reranking_everything():
    x, _ = make_embeddings(300, dim=16)
    codes = evaluate.lsh(x, 16, seed=0)(x)
    q, d = x[:20], x[20:]
    assert evaluate.recall_at_k(codes[:20], codes[20:], q, d, 10, rescore=280) == 1.0
    assert evaluate.recall_at_k(codes[:20], codes[20:], q, d, 10) < 1.0


@pytest.mark.parametrize("method", ["LSH", "PCA+sign", "ITQ"])
def test_baselines_give_codes_far_above_chance(method):
    x, labels = make_embeddings(600, dim=32, topics=6)
    encode = evaluate.METHODS[method](x, 16, 0)
    codes = encode(x)
    assert codes.shape == (600, 2) and codes.dtype == np.uint8
    p = evaluate.precision_at_k(codes, labels, codes, labels, k=10, exclude_self=True)
    assert p > 0.5  # chance is about 1/6


def test_hashdex_beats_lsh_on_structured_data():
    x, labels = make_embeddings(800, dim=32, topics=8)
    rows = evaluate.evaluate_hashing(
        x, labels, bit_budgets=[16], seeds=[0], methods=["LSH", "hashdex"], n_queries=100
    )
    by_method = {r.method: r.metrics["P@100"][0] for r in rows}
    assert set(by_method) == {"float cosine", "sign of embedding", "LSH", "hashdex"}
    assert by_method["hashdex"] > by_method["LSH"]


def test_eval_command_on_a_labelled_corpus(tmp_path):
    args = [
        "-q",
        "eval",
        "--corpus",
        str(SAMPLE),
        "--label-field",
        "topic",
        "--bits",
        "16",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| hashdex | 16 |" in result.output and "| ITQ | 16 |" in result.output
    assert (tmp_path / "sample.md").is_file() and (tmp_path / "sample.png").stat().st_size > 0


def test_eval_needs_labels(tmp_path):
    result = CliRunner().invoke(
        main,
        ["-q", "eval", "--corpus", str(SAMPLE), "--label-field", "nope", "--out", str(tmp_path)],
    )
    assert result.exit_code == 1 and "no 'nope' field" in result.output
