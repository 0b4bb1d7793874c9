"""A LangChain retriever over a hashdex index (the ``langchain`` extra: langchain-core).

>>> from retrieval.langchain import HashdexRetriever
>>> retriever = HashdexRetriever(index=Index.open("idx"), k=4, rescore=100)
>>> retriever.invoke("which planet is the largest")   # -> list[Document]

Each ``Document`` carries the hit's text as ``page_content`` and its metadata, plus ``id``,
``hamming_distance`` and ``score``.
"""

from __future__ import annotations

from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the LangChain retriever needs langchain-core: pip install -e '.[langchain]'"
    ) from error
from pydantic import ConfigDict

from retrieval.index import Index


class HashdexRetriever(BaseRetriever):
    """Retrieves the k nearest documents of a query from a hashdex ``Index``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Index
    k: int = 4
    rescore: int | None = None
    radius: int | None = None
    where: dict[str, Any] | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        results = self.index.search(
            [query], k=self.k, rescore=self.rescore, radius=self.radius, where=self.where
        )
        return [
            Document(
                id=hit.id,
                page_content=hit.text,
                metadata={
                    **hit.metadata,
                    "id": hit.id,
                    "hamming_distance": hit.distance,
                    "score": hit.score,
                },
            )
            for hit in results.hits(0)
        ]
