"""Live updates: add (or replace) and delete documents, and retrain, in an existing index.

New documents are embedded with the index's model and hashed with its trained hasher; nothing
is retrained. Each update writes a new version of the index directory beside the old one and
renames it into place, so an interrupted update leaves the previous version readable (with an
external store URL, the SQL changes are one transaction committed just before the rename).
Rows of deleted documents stay unused in ``embeddings.npy`` (never returned) until
``retrain_index`` compacts them. An update rewrites the tables and embeddings: its cost
grows with the index, not the change.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from indexer.build import (
    check_embeddings,
    documents_for_embeddings,
    staged,
    swap_into_place,
    write_manifest,
)
from indexer.corpus import Corpus, read_corpus
from indexer.train import TrainConfig, train_hasher
from retrieval.embed import embed_texts
from retrieval.index import EMBEDDINGS_NAME, HASHER_DIR, TABLES_DIR, Index
from retrieval.store import DocumentStore, sqlite_url
from retrieval.tables import HammingIndex


def _tables_without(index: Index, rows: Iterable[int]) -> HammingIndex:
    """A copy of the index's tables less these rows (the open index is left as it is)."""
    keep = ~np.isin(index.hamming.ids, np.fromiter(rows, np.int64))
    tables = HammingIndex(index.bits)
    tables.add(np.asarray(index.hamming.codes)[keep], np.asarray(index.hamming.ids)[keep])
    return tables


def _commit(index: Index, tmp: Path, manifest: dict) -> None:
    """Write the manifest, swap the new version in, and reload the index from it."""
    write_manifest(tmp, manifest)
    index.close()
    swap_into_place(tmp, index.path, overwrite=True, drop_old_store=False)
    index.reload()


def _store_for(index: Index, directory: Path) -> DocumentStore:
    info = index.manifest["store"]
    return DocumentStore(info["url"] or sqlite_url(directory), info["table"])


def add_documents(
    index: Index,
    documents: str | Path | Iterable[Any] | None = None,
    *,
    embeddings: np.ndarray | None = None,
    ids: Iterable[Any] | None = None,
    text_field: str = "text",
    id_field: str = "id",
    skip_invalid: bool = False,
) -> int:
    """Add documents to ``index``; a document whose id is already there replaces it.

    Give ``documents`` (a corpus path or an iterable of dicts) to embed them with the index's
    model, or ``embeddings`` with ``ids``. Returns how many documents were written.
    """
    if documents is None and embeddings is None:
        raise ValueError("pass documents= (texts to embed) or embeddings= with ids=")
    if documents is not None:
        corpus = read_corpus(documents, text_field, id_field, skip_invalid)
    else:
        corpus = Corpus(documents_for_embeddings(ids, len(np.asarray(embeddings))))
    docs = corpus.documents
    if not docs:
        raise ValueError("no valid documents to add")
    if embeddings is None:
        vectors, _ = embed_texts(index.embedder, [d.text for d in docs])
    else:
        vectors = embeddings
    vectors = check_embeddings(vectors, len(docs))
    if vectors.shape[1] != index.dim:
        raise ValueError(f"embeddings have dimension {vectors.shape[1]}, the index {index.dim}")
    codes = index.hasher.encode(vectors)

    manifest = dict(index.manifest)
    first_row = int(manifest["next_row"])
    rows = np.arange(first_row, first_row + len(docs), dtype=np.int64)
    replaced = index.store.rows_for([d.id for d in docs])

    with staged(index.path, copy=True) as tmp:
        hamming = _tables_without(index, replaced.values())
        hamming.add(codes, rows)
        hamming.save(tmp / TABLES_DIR)
        if index.embeddings is not None:
            grown = np.concatenate([np.asarray(index.embeddings), vectors.astype(np.float16)])
            np.save(tmp / EMBEDDINGS_NAME, grown, allow_pickle=False)
        store = _store_for(index, tmp)
        store.replace(
            list(replaced.values()),
            rows.tolist(),
            [d.id for d in docs],
            [d.text for d in docs],
            [d.metadata for d in docs],
        )
        store.close()
        manifest.update(documents=len(hamming), next_row=first_row + len(docs))
        _commit(index, tmp, manifest)
        return len(docs)


def delete_documents(index: Index, ids: Iterable[Any]) -> list[str]:
    """Delete documents by id; returns the ids that were not in the index."""
    ids = [str(i) for i in ids]
    found = index.store.rows_for(ids)
    missing = [i for i in ids if i not in found]
    if not found:
        return missing
    with staged(index.path, copy=True) as tmp:
        hamming = _tables_without(index, found.values())
        hamming.save(tmp / TABLES_DIR)
        store = _store_for(index, tmp)
        store.replace(list(found.values()), [], [], [], [])
        store.close()
        manifest = dict(index.manifest)
        manifest["documents"] = len(hamming)
        _commit(index, tmp, manifest)
        return missing


def retrain_index(index: Index, config: TrainConfig | None = None, show_progress: bool = False):
    """Retrain the hasher on the documents now in the index (from their stored float
    embeddings), re-encode them all, and compact: rows are renumbered 0..n-1 and the
    embeddings of deleted documents dropped. Written as a new version, atomically."""
    if index.embeddings is None:
        raise ValueError(
            f"{index.path} keeps no float embeddings to retrain on; rebuild it with "
            "hashdex index --overwrite"
        )
    rows = np.sort(np.asarray(index.hamming.ids))
    vectors = np.asarray(index.embeddings[rows], np.float32)
    config = replace(config or TrainConfig(), bits=index.bits)
    result = train_hasher(vectors, config, show_progress)
    compact = np.arange(len(rows), dtype=np.int64)
    with staged(index.path, copy=True) as tmp:
        shutil.rmtree(tmp / HASHER_DIR)
        result.model.save(tmp / HASHER_DIR)
        hamming = HammingIndex(index.bits)
        hamming.add(result.model.encode(vectors), compact)
        hamming.save(tmp / TABLES_DIR)
        np.save(tmp / EMBEDDINGS_NAME, vectors.astype(np.float16), allow_pickle=False)
        store = _store_for(index, tmp)
        store.renumber(rows.tolist(), compact.tolist())
        store.close()
        manifest = dict(index.manifest)
        manifest.update(training=result.summary(), next_row=len(rows), trained_rows=len(rows))
        _commit(index, tmp, manifest)
