"""Read and validate input documents: JSONL, JSON arrays, CSV/TSV, text folders, iterables.

Every reader yields ``Document(id, text, metadata)``. Problems (malformed JSON, missing or empty
text, duplicate ids, invalid UTF-8, binary files) name the file and line; they raise a
``CorpusError`` unless ``skip_invalid`` is set, in which case they are reported and skipped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class CorpusError(ValueError):
    """Invalid input documents; ``problems`` lists each with its file and line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        super().__init__(f"{shown}{more}; fix the input or pass skip_invalid / --skip-invalid")


@dataclass
class Corpus:
    documents: list[Document]
    skipped: list[Problem] = field(default_factory=list)


# A raw record: where it came from, the position used for a default id, and its fields.
_Record = tuple[str, str, Any]


def _decoded_lines(path: Path, problems: list[Problem]) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line that is valid UTF-8; the others become problems."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if b"\x00" in raw:
                problems.append(Problem(f"{path}:{number}", "binary data (NUL byte)"))
                continue
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problems.append(Problem(f"{path}:{number}", f"invalid UTF-8 ({error.reason})"))


def _jsonl_records(path: Path, problems: list[Problem]) -> Iterator[_Record]:
    for number, line in _decoded_lines(path, problems):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", str(number), json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(Problem(f"{path}:{number}", f"malformed JSON ({error.msg})"))


def _json_array_records(path: Path, problems: list[Problem]) -> Iterator[_Record]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        problems.append(Problem(str(path), f"invalid UTF-8 at byte {error.start}"))
        return
    except json.JSONDecodeError as error:
        problems.append(Problem(f"{path}:{error.lineno}", f"malformed JSON ({error.msg})"))
        return
    if not isinstance(data, list):
        problems.append(Problem(str(path), "a .json corpus must be an array of objects"))
        return
    for i, record in enumerate(data):
        yield f"{path}[{i}]", str(i), record


def _csv_records(path: Path, problems: list[Problem]) -> Iterator[_Record]:
    numbered = list(_decoded_lines(path, problems))
    reader = csv.DictReader((line for _, line in numbered), delimiter=CSV_DELIMITERS[path.suffix])
    try:
        for record in reader:
            number = numbered[reader.line_num - 1][0]
            if None in record:
                problems.append(Problem(f"{path}:{number}", "more fields than the header"))
                continue
            yield f"{path}:{number}", str(number), record
    except csv.Error as error:
        problems.append(Problem(f"{path}:{reader.line_num}", f"malformed CSV ({error})"))


def _directory_records(root: Path, text_field: str, problems: list[Problem]) -> Iterator[_Record]:
    """One document per .txt/.md file below ``root``; the id is the path relative to it."""
    base = root.resolve()
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in TEXT_SUFFIXES or not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        if not path.resolve().is_relative_to(base):
            problems.append(Problem(str(path), "links outside the corpus folder; not read"))
            continue
        data = path.read_bytes()
        if b"\x00" in data:
            problems.append(Problem(str(path), "binary data (NUL byte)"))
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            problems.append(Problem(f"{path}:{line}", f"invalid UTF-8 ({error.reason})"))
            continue
        yield str(path), relative, {"id": relative, text_field: text, "path": relative}


def _file_records(path: Path, text_field: str, problems: list[Problem]) -> Iterator[_Record]:
    if path.is_dir():
        return _directory_records(path, text_field, problems)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _jsonl_records(path, problems)
    if suffix == ".json":
        return _json_array_records(path, problems)
    if suffix in CSV_DELIMITERS:
        return _csv_records(path, problems)
    raise ValueError(
        f"{path}: unknown corpus format {suffix!r}; use .jsonl, .json, .csv, .tsv or a folder "
        "of .txt/.md files"
    )


def _iterable_records(items: Iterable[Any]) -> Iterator[_Record]:
    for i, item in enumerate(items):
        if isinstance(item, Document):
            item = {"id": item.id, "text": item.text, **item.metadata}
        yield f"document {i}", str(i), item


def _to_document(record: Any, default_id: str, text_field: str, id_field: str) -> Document:
    """Validate one record; raises ValueError with the reason."""
    if not isinstance(record, Mapping):
        raise ValueError(
            f"expected an object with a {text_field!r} field, got {type(record).__name__}"
        )
    if text_field not in record:
        raise ValueError(f"missing text field {text_field!r}")
    text = record[text_field]
    if not isinstance(text, str):
        raise ValueError(f"text field {text_field!r} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"empty text in field {text_field!r}")
    raw_id = record.get(id_field, default_id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or str(raw_id) == "":
        raise ValueError(f"id field {id_field!r} must be a non-empty string or integer")
    metadata = {k: v for k, v in record.items() if k not in (text_field, id_field)}
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata is not JSON-serialisable ({error})") from error
    return Document(str(raw_id), text, metadata)


def read_corpus(
    source: str | Path | Iterable[Any],
    text_field: str = "text",
    id_field: str = "id",
    skip_invalid: bool = False,
) -> Corpus:
    """Read documents from a file, a folder or an iterable of dicts, and validate them.

    Fields other than the text and id become metadata. Records without an id get their line
    number (files) or position (iterables). Raises ``CorpusError`` on the first pass over
    invalid input unless ``skip_invalid``.
    """
    problems: list[Problem] = []
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"corpus {path} does not exist")
        records = _file_records(path, text_field, problems)
    elif isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise TypeError("documents must be a path or an iterable of dicts")
    else:
        records = _iterable_records(source)

    documents: list[Document] = []
    first_seen: dict[str, str] = {}
    for where, default_id, record in records:
        try:
            doc = _to_document(record, default_id, text_field, id_field)
        except ValueError as error:
            problems.append(Problem(where, str(error)))
            continue
        if doc.id in first_seen:
            problems.append(
                Problem(where, f"duplicate id {doc.id!r} (first at {first_seen[doc.id]})")
            )
            continue
        first_seen[doc.id] = where
        documents.append(doc)
    if problems and not skip_invalid:
        raise CorpusError(problems)
    return Corpus(documents, problems)
