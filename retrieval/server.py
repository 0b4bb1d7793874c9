"""HTTP API over an index: FastAPI routes, served by uvicorn (``hashdex serve DIR``).

Searches run concurrently on the index version current when they start; writes are applied
one at a time, each as a new index version renamed into place before it is acknowledged, and
searches that start afterwards see it. An optional API key (``X-API-Key`` header or
``Authorization: Bearer``) guards every route but ``/health`` and the search page at ``/``
(static files from ``retrieval/static``, which call this same API with the key the user
types in).
"""

from __future__ import annotations

import hmac
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from retrieval.codes import unpack
from retrieval.index import Index

MAX_BODY_BYTES = 8 << 20
STATIC_DIR = Path(__file__).parent / "static"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Queries(_Strict):
    texts: list[str] | None = Field(None, description="Query texts (or give embeddings).")
    embeddings: list[list[float]] | None = Field(None, description="Query vectors.")

    def vectors(self, index: Index):
        """The query embeddings: the texts embedded by the index's model, or those given."""
        if (self.texts is None) == (self.embeddings is None):
            raise ValueError("give exactly one of texts and embeddings")
        if self.texts is not None:
            return index.embed(self.texts)
        with np.errstate(over="ignore"):  # out-of-range values become inf, then a 400
            return np.asarray(self.embeddings, np.float32)


class SearchRequest(_Queries):
    k: int = Field(10, ge=1, le=10_000)
    radius: int | None = Field(None, ge=0)
    rescore: int | None = Field(None, ge=1)
    where: dict[str, Any] | None = None
    codes: bool = Field(
        False, description="Also return each query's code and each hit's code, as bit strings."
    )


class NeighbourhoodRequest(_Queries):
    radius: int = Field(8, ge=0, description="Count documents at distances 0..radius.")


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


def _bit_string(code, bits: int) -> str:
    return "".join("1" if b else "0" for b in unpack(code[None], bits)[0])


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

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/stats", dependencies=guarded)
    def stats() -> dict:
        return live.index.info()

    @app.post("/search", dependencies=guarded)
    def search(body: SearchRequest) -> dict:
        index = live.index
        vectors = body.vectors(index)
        results = index.search_embeddings(
            vectors, k=body.k, radius=body.radius, rescore=body.rescore, where=body.where
        )
        answers = [[hit._asdict() for hit in results.hits(i)] for i in range(len(results))]
        response: dict[str, Any] = {"order": results.order, "results": answers}
        if body.codes:
            bits = index.bits
            queries = index.encode_embeddings(vectors)
            response["query_codes"] = [_bit_string(code, bits) for code in queries]
            for i, hits in enumerate(answers):
                valid = results.rows[i] >= 0
                codes = index.hamming.codes_of(results.rows[i][valid])
                code_of = dict(zip(results.ids[i][valid], codes, strict=True))
                for hit in hits:
                    hit["code"] = _bit_string(code_of[hit["id"]], bits)
        return response

    @app.post("/neighbourhood", dependencies=guarded)
    def neighbourhood(body: NeighbourhoodRequest) -> dict:
        """How many documents lie at each Hamming distance 0..radius of each query's code."""
        index = live.index
        found = index.neighbourhood_embeddings(body.vectors(index), body.radius)
        return {
            "bits": index.bits,
            "results": [
                {"code": _bit_string(code, index.bits), "counts": counts.tolist()}
                for code, counts in zip(found.codes, found.counts, strict=True)
            ],
        }

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
