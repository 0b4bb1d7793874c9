"""Export an index's ids, codes and metadata for other backends that take binary vectors.

``npy``: a folder with ``ids.npy`` (fixed-width unicode), ``codes.npy`` (packed uint8, the
layout FAISS ``IndexBinary*`` takes) and ``metadata.jsonl`` (one JSON object per row, aligned).
``parquet``: one file with columns ``id`` (string), ``code`` (fixed-size binary) and
``metadata`` (JSON text); needs pyarrow (the ``export`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from retrieval.index import Index

Format = Literal["npy", "parquet"]
_CHUNK = 50_000


def _rows_in_order(index: Index):
    """(ids, codes, metadata) of every live document, by row, in chunks."""
    order = np.argsort(np.asarray(index.hamming.ids), kind="stable")
    rows, codes = np.asarray(index.hamming.ids)[order], np.asarray(index.hamming.codes)[order]
    for lo in range(0, len(rows), _CHUNK):
        chunk = rows[lo : lo + _CHUNK]
        docs = index.store.get(chunk)
        yield (
            [docs[r][0] for r in chunk.tolist()],
            codes[lo : lo + _CHUNK],
            [docs[r][2] for r in chunk.tolist()],
        )


def export_index(index: Index, out: str | Path, format: Format = "npy") -> Path:
    """Write the index's ids, codes and metadata to ``out`` in ``format``; returns ``out``."""
    out = Path(out)
    if format == "npy":
        out.mkdir(parents=True, exist_ok=True)
        ids, codes = [], []
        with (out / "metadata.jsonl").open("w", encoding="utf-8") as meta:
            for chunk_ids, chunk_codes, metadatas in _rows_in_order(index):
                ids += chunk_ids
                codes.append(chunk_codes)
                meta.writelines(json.dumps(m, ensure_ascii=False) + "\n" for m in metadatas)
        np.save(out / "ids.npy", np.array(ids, dtype=str), allow_pickle=False)
        empty = np.zeros((0, index.bits // 8), np.uint8)
        np.save(out / "codes.npy", np.concatenate(codes) if codes else empty, allow_pickle=False)
        return out
    if format == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ImportError("parquet export needs pyarrow: pip install -e '.[export]'") from error
        schema = pa.schema(
            [("id", pa.string()), ("code", pa.binary(index.bits // 8)), ("metadata", pa.string())]
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(out, schema) as writer:
            for chunk_ids, chunk_codes, metadatas in _rows_in_order(index):
                table = pa.table(
                    {
                        "id": chunk_ids,
                        "code": [bytes(c) for c in chunk_codes],
                        "metadata": [json.dumps(m, ensure_ascii=False) for m in metadatas],
                    },
                    schema=schema,
                )
                writer.write_table(table)
        return out
    raise ValueError(f"format={format!r}; use 'npy' or 'parquet'")
