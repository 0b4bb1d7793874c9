"""split_index(): one index -> a sharded directory of N indexes over consecutive row ranges.

Each shard is a complete index (same hasher, its documents' codes, embeddings and store) that
can be opened, served and updated on its own; ``retrieval.shards.ShardedIndex`` answers over
all of them as the original does. The sharded directory is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from indexer.build import staged, swap_into_place, write_index
from indexer.corpus import Document
from retrieval.index import MANIFEST_NAME, Index
from retrieval.shards import SHARDS_FORMAT


def split_index(
    path: str | Path,
    out: str | Path,
    shards: int,
    store_url: str | None = None,
    overwrite: bool = False,
) -> list[int]:
    """Write ``shards`` indexes over consecutive ranges of ``path``'s documents under ``out``
    (``shard-000``, ...), with a manifest naming them. Returns each shard's document count."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True / --overwrite")
    with Index.open(path) as index:
        if not 1 <= shards <= len(index):
            raise ValueError(f"shards={shards} must be between 1 and the {len(index)} documents")
        rows = np.sort(np.asarray(index.hamming.ids))
        out.parent.mkdir(parents=True, exist_ok=True)
        with staged(out) as tmp:
            entries = []
            for number, part in enumerate(np.array_split(rows, shards)):
                stored = index.store.get(part)
                docs = [Document(*stored[int(r)]) for r in part]
                vectors = None if index.embeddings is None else index.embeddings[part]
                name = f"shard-{number:03d}"
                write_index(
                    tmp / name,
                    docs,
                    vectors,
                    index.hamming.codes_of(part),
                    index.hasher,
                    {
                        "embedder": index.manifest.get("embedder"),
                        "training": index.manifest.get("training"),
                        "build": {"split_from": str(Path(path).resolve()), "shard": number},
                    },
                    store_url=store_url,
                )
                entries.append({"path": name, "documents": len(docs)})
            manifest = {
                "format": SHARDS_FORMAT,
                "format_version": 1,
                "bits": index.bits,
                "embedder": index.manifest.get("embedder"),
                "shards": entries,
            }
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
            swap_into_place(tmp, out, overwrite)
    return [entry["documents"] for entry in entries]
