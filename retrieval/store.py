"""The document store: id, text and metadata of every document, by row, in SQL.

A SQLite file inside the index directory by default; any SQLAlchemy URL (PostgreSQL, say)
otherwise. Rows are the integers the search tables return; ids are the users' strings.
All SQL goes through SQLAlchemy Core with bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine

DEFAULT_TABLE = "documents"
SQLITE_NAME = "docs.sqlite"
_CHUNK = 5000


def sqlite_url(directory: str | Path) -> str:
    return f"sqlite:///{Path(directory).resolve() / SQLITE_NAME}"


def _documents_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("row", BigInteger, primary_key=True, autoincrement=False),
        Column("id", String, nullable=False, unique=True, index=True),
        Column("text", Text, nullable=False),
        Column("metadata", JSON, nullable=False),
    )


class DocumentStore:
    """Documents keyed by row: ``replace`` (delete and insert), ``get``, ``ids``, ``rows_for``,
    ``count``."""

    def __init__(self, url: str, table: str = DEFAULT_TABLE, create: bool = False):
        self.url, self.table_name = url, table
        self.engine: Engine = create_engine(url)
        self.table = _documents_table(table)
        if create:
            self.table.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def drop(self) -> None:
        self.table.drop(self.engine, checkfirst=True)

    def replace(
        self,
        old_rows: Sequence[int],
        rows: Sequence[int],
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[dict],
    ) -> None:
        """Delete ``old_rows`` and insert the new documents, in one transaction."""
        records = [
            {"row": int(r), "id": i, "text": t, "metadata": m}
            for r, i, t, m in zip(rows, ids, texts, metadatas, strict=True)
        ]
        old_rows = sorted(int(r) for r in old_rows)
        with self.engine.begin() as conn:
            for lo in range(0, len(old_rows), _CHUNK):
                chunk = old_rows[lo : lo + _CHUNK]
                conn.execute(delete(self.table).where(self.table.c.row.in_(chunk)))
            for lo in range(0, len(records), _CHUNK):
                conn.execute(self.table.insert(), records[lo : lo + _CHUNK])

    def renumber(self, old_rows: Sequence[int], new_rows: Sequence[int]) -> None:
        """Give documents new row numbers (old_rows[i] -> new_rows[i]) in one transaction."""
        t = self.table
        pairs = [
            {"old": -int(o) - 1, "new": int(n)} for o, n in zip(old_rows, new_rows, strict=True)
        ]
        with self.engine.begin() as conn:
            # Through negative numbers first, so that no two documents ever share a row.
            conn.execute(update(t).values(row=-t.c.row - 1))
            if pairs:
                statement = (
                    update(t).where(t.c.row == bindparam("old")).values(row=bindparam("new"))
                )
                conn.execute(statement, pairs)

    def _select_in(self, key, values: list, *columns):
        """The rows of ``columns`` whose ``key`` column is in ``values``, a chunk at a time."""
        with self.engine.connect() as conn:
            for lo in range(0, len(values), _CHUNK):
                query = select(*columns).where(key.in_(values[lo : lo + _CHUNK]))
                yield from conn.execute(query)

    def get(self, rows: Iterable[int]) -> dict[int, tuple[str, str, dict]]:
        """``{row: (id, text, metadata)}`` for the rows that exist."""
        t = self.table
        wanted = sorted({int(r) for r in rows})
        found = self._select_in(t.c.row, wanted, t.c.row, t.c.id, t.c.text, t.c.metadata)
        return {row: (doc_id, text, metadata) for row, doc_id, text, metadata in found}

    def ids(self, rows: Iterable[int]) -> dict[int, str]:
        """``{row: id}`` for the rows that exist (no texts read)."""
        t = self.table
        return dict(self._select_in(t.c.row, sorted({int(r) for r in rows}), t.c.row, t.c.id))

    def rows_for(self, ids: Iterable[str]) -> dict[str, int]:
        """``{id: row}`` for the ids that exist."""
        t = self.table
        return dict(self._select_in(t.c.id, list(dict.fromkeys(ids)), t.c.id, t.c.row))

    def rows_where(self, where: Mapping[str, Any]) -> np.ndarray:
        """Sorted rows whose metadata equals ``where`` on every key (a list value: any of)."""
        t = self.table
        query = select(t.c.row)
        for key, wanted in where.items():
            values = wanted if isinstance(wanted, (list, tuple)) else [wanted]
            if not isinstance(key, str) or not values:
                raise ValueError(f"where: keys must be strings and lists non-empty ({key!r})")
            clauses = []
            for value in values:
                if isinstance(value, bool):
                    clauses.append(t.c.metadata[key].as_boolean() == value)
                elif isinstance(value, int):
                    clauses.append(t.c.metadata[key].as_integer() == value)
                elif isinstance(value, float):
                    clauses.append(t.c.metadata[key].as_float() == value)
                elif isinstance(value, str):
                    clauses.append(t.c.metadata[key].as_string() == value)
                else:
                    raise ValueError(
                        f"where[{key!r}]: {value!r} is not a string, number or boolean"
                    )
            query = query.where(or_(*clauses))
        with self.engine.connect() as conn:
            rows = [row for (row,) in conn.execute(query.order_by(t.c.row))]
        return np.asarray(rows, np.int64)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.table)).scalar_one())

    def metadata_fields(self, sample: int = 1000, max_values: int = 50) -> dict[str, list | None]:
        """The metadata keys of the first ``sample`` documents, each with its distinct values
        (sorted) where they are at most ``max_values`` strings, numbers or booleans, else None:
        what a filter form offers."""
        fields: dict[str, set | None] = {}
        with self.engine.connect() as conn:
            for (metadata,) in conn.execute(select(self.table.c.metadata).limit(sample)):
                for key, value in metadata.items():
                    values = fields.setdefault(key, set())
                    if values is None:
                        continue
                    scalar = isinstance(value, (str, int, float, bool))
                    if scalar and (value in values or len(values) < max_values):
                        values.add(value)
                    else:
                        fields[key] = None
        return {
            key: None if values is None else sorted(values, key=lambda v: (str(type(v)), v))
            for key, values in fields.items()
        }
