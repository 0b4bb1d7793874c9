"""HTTP API over an index: FastAPI routes, served by uvicorn (``hashdex serve DIR``).

Searches run concurrently on the index version current when they start; writes are applied
one at a time, each as a new index version renamed into place before it is acknowledged, and
searches that start afterwards see it. An optional API key (``X-API-Key`` header or
``Authorization: Bearer``) guards every route but ``/health``.
"""

from __future__ import annotations

import hmac
import threading
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from retrieval.index import Index

MAX_BODY_BYTES = 8 << 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(_Strict):
    texts: list[str] | None = Field(None, description="Query texts (or give embeddings).")
    embeddings: list[list[float]] | None = Field(None, description="Query vectors.")
    k: int = Field(10, ge=1, le=10_000)
    radius: int | None = Field(None, ge=0)
    rescore: int | None = Field(None, ge=1)
    where: dict[str, Any] | None = None


class DocumentsRequest(_Strict):
    documents: list[dict[str, Any]] = Field(..., min_length=1, max_length=100_000)


class _Live:
    """The current index version, swapped (never mutated) by writers under one lock."""

    def __init__(self, path: Path):
        self.path = path
        self.index = Index.open(path)
        self.write_lock = threading.Lock()

    def write(self, change) -> Any:
        with self.write_lock:
            writer = Index.open(self.path, embedder=self.index._embedder)
            try:
                result = change(writer)
            finally:
                writer.close()
            self.index = Index.open(self.path, embedder=self.index._embedder)
            return result


def _hits(results, i: int) -> list[dict]:
    return [hit._asdict() for hit in results.hits(i)]


def create_app(path: str | Path, api_key: str | None = None) -> FastAPI:
    """The HTTP application over the index directory at ``path``."""
    live = _Live(Path(path))
    app = FastAPI(title="hashdex", description="Semantic-hashing document retrieval.")

    def authorised(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("x-api-key", "")
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            given = given or bearer[7:]
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(ValueError)
    @app.exception_handler(TypeError)
    async def bad_value(request: Request, error: Exception):
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return JSONResponse({"error": error.detail}, status_code=error.status_code)

    guarded = [Depends(authorised)]

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "documents": len(live.index)}

    @app.get("/stats", dependencies=guarded)
    def stats() -> dict:
        info = live.index.info()
        info["bit_balance"].pop("per_bit")
        return info

    @app.post("/search", dependencies=guarded)
    def search(body: SearchRequest) -> dict:
        if (body.texts is None) == (body.embeddings is None):
            raise ValueError("give exactly one of texts and embeddings")
        index = live.index
        options = {"k": body.k, "radius": body.radius, "rescore": body.rescore, "where": body.where}
        if body.texts is not None:
            results = index.search(body.texts, **options)
        else:
            import numpy as np

            with np.errstate(over="ignore"):  # out-of-range values become inf, then a 400
                vectors = np.asarray(body.embeddings, np.float32)
            results = index.search_embeddings(vectors, **options)
        return {"order": results.order, "results": [_hits(results, i) for i in range(len(results))]}

    @app.post("/documents", dependencies=guarded)
    def add_documents(body: DocumentsRequest) -> dict:
        written = live.write(lambda index: index.add(body.documents))
        return {"written": written, "documents": len(live.index)}

    @app.get("/documents/{doc_id}", dependencies=guarded)
    def get_document(doc_id: str) -> dict:
        index = live.index
        row = index.store.rows_for([doc_id]).get(doc_id)
        if row is None:
            raise HTTPException(404, f"no document {doc_id!r}")
        found_id, text, metadata = index.store.get([row])[row]
        return {"id": found_id, "text": text, "metadata": metadata}

    @app.delete("/documents/{doc_id}", dependencies=guarded)
    def delete_document(doc_id: str) -> dict:
        missing = live.write(lambda index: index.delete([doc_id]))
        if missing:
            raise HTTPException(404, f"no document {doc_id!r}")
        return {"deleted": doc_id, "documents": len(live.index)}

    return app
