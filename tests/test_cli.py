"""The command line end to end on the sample corpus, and its error reporting."""

import json

import pytest
from click.testing import CliRunner
from conftest import SAMPLE

from indexer.cli import main


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory, sample_index):
    """Index the sample corpus through the CLI (embeddings come from the run's cache)."""
    out = tmp_path_factory.mktemp("cli") / "idx"
    result = CliRunner().invoke(
        main, ["-q", "index", str(SAMPLE), "--out", str(out), "--bits", "32"]
    )
    assert result.exit_code == 0, result.output
    assert "indexed 160 documents" in result.output
    return out


def test_query_prints_ranked_hits(cli_index):
    result = CliRunner().invoke(
        main, ["query", str(cli_index), "the planets of the solar system", "-k", "3"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("query: the planets of the solar system")
    assert [line.split()[0] for line in lines[1:]] == ["1.", "2.", "3."]
    assert "d=" in lines[1] and "score=" in lines[1]


def test_query_json_with_rescore_and_radius(cli_index):
    args = [
        "query",
        str(cli_index),
        "football match",
        "bread recipe",
        "-k",
        "4",
        "--json",
        "--rescore",
        "40",
        "--radius",
        "32",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.output.splitlines()]
    assert [a["query"] for a in answers] == ["football match", "bread recipe"]
    assert all(a["order"] == "cosine" and len(a["hits"]) == 4 for a in answers)
    assert {"id", "distance", "score", "text", "metadata"} == set(answers[0]["hits"][0])
    assert answers[0]["hits"][0]["metadata"]["topic"] == "football"


def test_query_where_filters_by_metadata(cli_index):
    args = [
        "query",
        str(cli_index),
        "a sunny day",
        "-k",
        "20",
        "--json",
        "--where",
        "topic=music",
        "--where",
        "topic=travel",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)["hits"]
    assert len(hits) == 20 and {h["metadata"]["topic"] for h in hits} <= {"music", "travel"}
    bad = CliRunner().invoke(main, ["query", str(cli_index), "x", "--where", "novalue"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output


def test_info(cli_index):
    result = CliRunner().invoke(main, ["info", str(cli_index)])
    assert result.exit_code == 0, result.output
    assert "documents   160" in result.output and "bits        32" in result.output
    assert "bit balance" in result.output and "buckets" in result.output
    as_json = json.loads(CliRunner().invoke(main, ["info", str(cli_index), "--json"]).output)
    assert as_json["documents"] == 160 and len(as_json["bit_balance"]["per_bit"]) == 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "{idx}", "text", "-k", "0"], "k=0 must be a positive integer"),
        (["query", "{idx}", "text", "--radius", "99"], "radius=99 must be between 0 and bits=32"),
        (["query", "{tmp}", "text"], "is not a hashdex index"),
        (["index", "{bad}", "--out", "{tmp}/new"], "bad.jsonl:2: malformed JSON"),
        (["index", str(SAMPLE), "--out", "{idx}"], "already exists"),
        (["index", str(SAMPLE), "--out", "{tmp}/x", "--bits", "10"], "bits=10 is not supported"),
    ],
)
def test_errors_are_one_line_without_traceback(cli_index, tmp_path, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    args = [a.format(idx=cli_index, tmp=tmp_path, bad=bad) for a in args]
    result = CliRunner().invoke(main, ["-q", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_skip_invalid_reports_what_was_skipped(tmp_path):
    corpus = tmp_path / "c.jsonl"
    lines = [json.dumps({"id": str(i), "text": f"document number {i}"}) for i in range(12)]
    corpus.write_text("\n".join([*lines, "{broken"]) + "\n")
    out = tmp_path / "idx"
    result = CliRunner().invoke(
        main, ["-q", "index", str(corpus), "--out", str(out), "--bits", "16", "--skip-invalid"]
    )
    assert result.exit_code == 0, result.output
    assert "indexed 12 documents" in result.output and "skipped 1 invalid" in result.output


def test_verify(cli_index, tmp_path):
    result = CliRunner().invoke(main, ["verify", str(cli_index)])
    assert result.exit_code == 0 and "intact" in result.output
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(cli_index, copy)
    (copy / "docs.sqlite").write_bytes((copy / "docs.sqlite").read_bytes() + b"x")
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 1 and "docs.sqlite: checksum mismatch" in result.output
