"""Every corpus reader, and every way input can be invalid."""

import json

import pytest

from indexer.corpus import CorpusError, Document, read_corpus


def _write(path, text: str | bytes):
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def test_jsonl_with_field_mapping_and_metadata(tmp_path):
    path = _write(
        tmp_path / "c.jsonl",
        '{"key": "a", "body": "first text", "topic": "x"}\n\n{"key": 7, "body": "second"}\n',
    )
    corpus = read_corpus(path, text_field="body", id_field="key")
    assert corpus.documents == [
        Document("a", "first text", {"topic": "x"}),
        Document("7", "second", {}),
    ]


def test_missing_ids_default_to_line_numbers(tmp_path):
    path = _write(tmp_path / "c.jsonl", '{"text": "one"}\n{"text": "two"}\n')
    assert [d.id for d in read_corpus(path).documents] == ["1", "2"]


def test_csv_tsv_and_json_array(tmp_path):
    csv_path = _write(tmp_path / "c.csv", 'id,text,lang\n1,"hello, world",en\n2,bonjour,fr\n')
    docs = read_corpus(csv_path).documents
    assert docs[0] == Document("1", "hello, world", {"lang": "en"})
    tsv_path = _write(tmp_path / "c.tsv", "id\ttext\nx\tsome text\n")
    assert read_corpus(tsv_path).documents == [Document("x", "some text", {})]
    json_path = _write(tmp_path / "c.json", json.dumps([{"id": "q", "text": "t"}]))
    assert read_corpus(json_path).documents == [Document("q", "t", {})]


def test_text_folder_ids_are_relative_paths(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    _write(tmp_path / "docs" / "a.txt", "alpha")
    _write(tmp_path / "docs" / "sub" / "b.md", "# beta")
    _write(tmp_path / "docs" / "ignored.bin", "x")
    docs = read_corpus(tmp_path / "docs").documents
    assert [(d.id, d.text) for d in docs] == [("a.txt", "alpha"), ("sub/b.md", "# beta")]


def test_iterable_of_dicts_and_documents():
    docs = read_corpus([{"id": "a", "text": "x", "n": 1}, Document("b", "y", {"m": 2})]).documents
    assert docs == [Document("a", "x", {"n": 1}), Document("b", "y", {"m": 2})]


@pytest.mark.parametrize(
    ("content", "message", "line"),
    [
        (b'{"id": "a", "text": "ok"}\n{"id": "b", "text": \n', "malformed JSON", 2),
        (b'{"id": "a", "text": "ok"}\n{"id": "b"}\n', "missing text field 'text'", 2),
        (b'{"id": "a", "text": "   "}\n', "empty text", 1),
        (b'{"id": "a", "text": 42}\n', "must be a string", 1),
        (b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "duplicate id 'a'", 2),
        (b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "\xff\xfe"}\n', "invalid UTF-8", 2),
        (b'{"id": "a", "text": "ok"}\n\x00\x01\x02\n', "binary data", 2),
        (b'["not", "an object"]\n', "expected an object", 1),
        (b'{"id": true, "text": "x"}\n', "id field", 1),
    ],
)
def test_invalid_jsonl_names_file_and_line(tmp_path, content, message, line):
    path = _write(tmp_path / "bad.jsonl", content)
    with pytest.raises(CorpusError, match=message) as caught:
        read_corpus(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    skipped = read_corpus(path, skip_invalid=True)
    assert len(skipped.skipped) == 1 and str(skipped.skipped[0]).startswith(f"{path}:{line}")


def test_skip_invalid_keeps_the_valid_rest(tmp_path):
    lines = [json.dumps({"id": str(i), "text": f"doc {i}"}) for i in range(5)]
    lines.insert(2, "{broken")
    path = _write(tmp_path / "c.jsonl", "\n".join(lines) + "\n")
    corpus = read_corpus(path, skip_invalid=True)
    assert [d.id for d in corpus.documents] == ["0", "1", "2", "3", "4"]
    assert "c.jsonl:3" in str(corpus.skipped[0])


def test_csv_invalid_utf8_line_is_reported(tmp_path):
    path = _write(tmp_path / "c.csv", b"id,text\n1,good\n2,bad \xc3\x28\n")
    with pytest.raises(CorpusError, match=r"c\.csv:3: invalid UTF-8"):
        read_corpus(path)
    assert [d.id for d in read_corpus(path, skip_invalid=True).documents] == ["1"]


def test_folder_refuses_links_that_escape_it(tmp_path):
    (tmp_path / "docs").mkdir()
    _write(tmp_path / "secret.txt", "outside")
    _write(tmp_path / "docs" / "ok.txt", "inside")
    (tmp_path / "docs" / "link.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(CorpusError, match="outside the corpus folder"):
        read_corpus(tmp_path / "docs")
    assert [d.id for d in read_corpus(tmp_path / "docs", skip_invalid=True).documents] == ["ok.txt"]


def test_unknown_format_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match=r"unknown corpus format '\.xml'"):
        read_corpus(_write(tmp_path / "c.xml", "<a/>"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(TypeError, match="an iterable of dicts"):
        read_corpus({"id": "a", "text": "x"})


def test_unserialisable_metadata_is_rejected():
    with pytest.raises(CorpusError, match="JSON-serialisable"):
        read_corpus([{"id": "a", "text": "x", "when": object()}])


def test_a_10_mb_document_is_read_whole(tmp_path):
    big = "word " * (2 * 1024 * 1024)  # 10 MiB of text
    path = _write(tmp_path / "big.jsonl", json.dumps({"id": "big", "text": big}) + "\n")
    (doc,) = read_corpus(path).documents
    assert len(doc.text) == len(big)
