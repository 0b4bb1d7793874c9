"""build_index(): corpus -> embeddings -> trained hasher -> codes -> tables + store -> index dir.

The directory is written atomically: everything goes into a temporary sibling, which is
renamed into place only when complete, so an interrupted build leaves any previous index at
that path readable.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from indexer.corpus import Corpus, Document, read_corpus
from indexer.train import TrainConfig, train_hasher
from retrieval.codes import check_bits
from retrieval.embed import (
    DEFAULT_MODEL,
    Embedder,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    embed_texts,
    normalize,
)
from retrieval.hasher import BinaryAutoencoder
from retrieval.index import (
    EMBEDDINGS_NAME,
    FORMAT_VERSION,
    HASHER_DIR,
    MANIFEST_NAME,
    TABLES_DIR,
    Index,
    file_checksums,
)
from retrieval.store import DEFAULT_TABLE, DocumentStore, sqlite_url
from retrieval.tables import HammingIndex

log = logging.getLogger("hashdex")


def _hashdex_version() -> str:
    try:
        return version("hashdex")
    except PackageNotFoundError:
        return "unknown"


class _Timer:
    """Wall time of each build stage, for the manifest and the CLI's report."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        log.info("%s ...", name)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)


def check_embeddings(embeddings: Any, n: int | None) -> np.ndarray:
    """Finite float vectors, one per document, L2-normalised; or a ValueError."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
        raise ValueError(
            f"embeddings must be a 2-d float array (n, dim), got {embeddings.dtype} "
            f"{embeddings.shape}"
        )
    if n is not None and len(embeddings) != n:
        raise ValueError(f"got {len(embeddings)} embeddings for {n} documents; pass one each")
    if not np.isfinite(embeddings).all():
        bad = int((~np.isfinite(embeddings)).any(axis=1).sum())
        raise ValueError(f"{bad} embeddings contain NaN or infinite values")
    return normalize(embeddings)


def documents_for_embeddings(ids: Any, n: int) -> list[Document]:
    """Text-less documents for bring-your-own embeddings: one unique id per row."""
    if ids is None:
        raise ValueError("embeddings= needs ids= (one id per row)")
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} embeddings; pass one each")
    if len(set(ids)) != n:
        raise ValueError("ids must be unique")
    return [Document(i, "", {}) for i in ids]


def write_manifest(path: Path, manifest: dict) -> None:
    """Checksum every file under ``path`` into the manifest, write it, and flush the whole
    version to disk (so that once it is renamed into place it survives a power cut)."""
    manifest["files"] = file_checksums(path)
    (path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    for file in path.rglob("*"):
        _fsync(file)
    _fsync(path)


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged(path: Path, copy: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write a new version in: empty, or (``copy``) a copy
    of the index at ``path`` less its manifest. Removed if the block fails; on success the
    block hands it to ``swap_into_place``."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    if copy:
        shutil.copytree(path, tmp, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    else:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_into_place(tmp: Path, path: Path, overwrite: bool, drop_old_store: bool = True) -> None:
    """Rename the finished version to ``path``; the old one (if any) goes only afterwards,
    with its table in an external database unless ``drop_old_store`` is off (an update
    keeps using that table)."""
    old = None
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True / --overwrite")
        if _exchange(tmp, path):  # readers never see the path missing
            old = tmp
        else:
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
    if old is not tmp:
        os.replace(tmp, path)
    _fsync(path.parent)
    if old is not None:
        if drop_old_store:
            _drop_external_store(old)
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _drop_external_store(index_dir: Path) -> None:
    """Drop the document table an old index kept in an external database."""
    try:
        store = json.loads((index_dir / MANIFEST_NAME).read_text())["store"]
    except (OSError, ValueError, KeyError):
        return
    if store.get("url"):
        doc_store = DocumentStore(store["url"], store["table"])
        doc_store.drop()
        doc_store.close()


def _save_float16(path: Path, vectors: np.ndarray, chunk: int = 1 << 16) -> None:
    """``np.save`` of ``vectors`` as float16, a chunk at a time (a memory-mapped input is
    never loaded whole)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=vectors.shape)
    for lo in range(0, len(vectors), chunk):
        out[lo : lo + chunk] = vectors[lo : lo + chunk]
    out.flush()
    del out


def write_index(
    path: Path,
    docs: Sequence[Document],
    vectors: np.ndarray | None,
    codes: np.ndarray,
    hasher: BinaryAutoencoder,
    manifest_fields: dict[str, Any],
    *,
    store_url: str | None = None,
    overwrite: bool = False,
    timer: _Timer | None = None,
) -> None:
    """Write an index directory atomically: the hasher, the tables of ``codes`` (row i is
    ``docs[i]``), the float16 ``vectors`` (None: keep none) and the store, then the manifest
    (with ``manifest_fields``: embedder, training, build), then swap it into place."""
    timer = timer or _Timer()
    bits = hasher.bits
    path.parent.mkdir(parents=True, exist_ok=True)
    table = DEFAULT_TABLE if store_url is None else f"hashdex_{uuid.uuid4().hex[:12]}"
    store = None
    with staged(path) as tmp:
        try:
            hasher.save(tmp / HASHER_DIR)
            with timer.stage("tables"):
                hamming = HammingIndex(bits)
                hamming.add(codes, np.arange(len(docs), dtype=np.int64))
                hamming.save(tmp / TABLES_DIR)
            if vectors is not None:
                _save_float16(tmp / EMBEDDINGS_NAME, vectors)
            with timer.stage("store"):
                store = DocumentStore(store_url or sqlite_url(tmp), table, create=True)
                store.replace(
                    [],
                    range(len(docs)),
                    [d.id for d in docs],
                    [d.text for d in docs],
                    [d.metadata for d in docs],
                )
                store.close()
            build = manifest_fields.get("build", {})
            manifest = {
                "format": "hashdex-index",
                "format_version": FORMAT_VERSION,
                "hashdex_version": _hashdex_version(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "bits": bits,
                "documents": len(docs),
                "next_row": len(docs),
                "trained_rows": len(docs),
                "has_embeddings": vectors is not None,
                "store": {"url": store_url, "table": table},
                **manifest_fields,
                "build": {**build, "seconds": timer.seconds},
            }
            write_manifest(tmp, manifest)
            swap_into_place(tmp, path, overwrite)
        except BaseException:
            if store is not None and store_url is not None:
                store.drop()
            raise
    log.info("wrote %s: %d documents, %d bits", path, len(docs), bits)


def _warn_truncated(embedder: Embedder, texts: list[str], stats: dict) -> None:
    """Count (into ``stats``) and log the texts longer than the model's window."""
    if not isinstance(embedder, SentenceTransformerEmbedder):
        return
    stats["truncated"] = embedder.count_truncated(texts)
    if stats["truncated"]:
        log.warning(
            "%d documents are longer than the model's %d-token window and were truncated",
            stats["truncated"],
            embedder.max_seq_length,
        )


def build_index(
    path: str | Path,
    documents: str | Path | Iterable[Any] | None = None,
    *,
    embeddings: np.ndarray | None = None,
    ids: Iterable[Any] | None = None,
    bits: int = 64,
    model: str = DEFAULT_MODEL,
    embedder: Embedder | None = None,
    config: TrainConfig | None = None,
    store_url: str | None = None,
    keep_embeddings: bool = True,
    text_field: str = "text",
    id_field: str = "id",
    skip_invalid: bool = False,
    cache: EmbeddingCache | bool = True,
    batch_size: int = 64,
    overwrite: bool = False,
    show_progress: bool = False,
    ray: str | None = None,
    ray_workers: int | None = None,
) -> Index:
    """Build an index directory at ``path`` and return it opened.

    Give ``documents`` (a corpus path, or an iterable of ``{"id", "text", ...}`` dicts; other
    fields become metadata) to have them embedded with ``model``, or ``embeddings`` (float,
    (n, dim)) with ``ids`` to bring your own vectors; with both, the embeddings are used for the
    documents in order. ``config`` sets training (its ``bits`` is replaced by ``bits``).
    ``ray="auto"`` (or a cluster address, or "local") embeds and encodes on a Ray cluster
    (``indexer.distributed``); the index is the same.
    """
    path = Path(path)
    bits = check_bits(bits)
    if documents is None and embeddings is None:
        raise ValueError("pass documents= (texts to embed) or embeddings= with ids=")
    if ray is not None and embeddings is not None:
        raise ValueError("ray= embeds texts on the cluster; build your own embeddings without")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True / --overwrite")
    timer = _Timer()
    stats: dict[str, Any] = {}

    with timer.stage("read"):
        if documents is not None:
            corpus = read_corpus(documents, text_field, id_field, skip_invalid)
        else:
            corpus = Corpus(documents_for_embeddings(ids, len(np.asarray(embeddings))))
        docs = corpus.documents
        stats["skipped"] = [str(p) for p in corpus.skipped]
        if len(docs) < 2:
            raise ValueError(
                f"the corpus has {len(docs)} valid documents; an index needs 2 or more"
            )
    for problem in corpus.skipped:
        log.warning("skipped %s", problem)

    embedder_info, stages = None, None
    if embeddings is None:
        embedder = embedder or SentenceTransformerEmbedder(model)
        texts = [d.text for d in docs]
        if ray is not None:
            from indexer.distributed import RayStages

            stages = RayStages(ray, ray_workers)
    # The Ray path's embeddings: a memory-mapped file beside the index while it is built.
    staging = path.with_name(f".{path.name}.embeddings-{uuid.uuid4().hex[:8]}.npy")
    try:
        with timer.stage("embed"):
            if embeddings is not None:
                vectors = check_embeddings(embeddings, len(docs))
            else:
                _warn_truncated(embedder, texts, stats)
                if stages is not None:
                    vectors, embedded = stages.embed(texts, embedder.name, batch_size, staging)
                    stats["embedded"], stats["ray_workers"] = len(texts), stages.workers
                else:
                    store_cache = EmbeddingCache() if cache is True else (cache or None)
                    vectors, stats["embedded"] = embed_texts(
                        embedder, texts, store_cache, batch_size, show_progress
                    )
                    vectors = check_embeddings(vectors, len(docs))
                embedder_info = {"name": embedder.name, "dim": int(vectors.shape[1])}
        with timer.stage("train"):
            config = replace(config or TrainConfig(), bits=bits)
            result = train_hasher(vectors, config, show_progress)
        with timer.stage("encode"):
            if stages is not None:
                codes = stages.encode(embedded, result.model, len(docs))
            else:
                codes = result.model.encode(vectors)
        write_index(
            path,
            docs,
            vectors if keep_embeddings else None,
            codes,
            result.model,
            {"embedder": embedder_info, "training": result.summary(), "build": stats},
            store_url=store_url,
            overwrite=overwrite,
            timer=timer,
        )
    finally:
        vectors = None  # unmap the staging file before removing it
        staging.unlink(missing_ok=True)
    return Index.open(path, embedder=embedder)
