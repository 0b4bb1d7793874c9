"""The online path of hashdex: everything a query needs, and the on-disk format."""

from retrieval.embed import Embedder, EmbeddingCache, SentenceTransformerEmbedder
from retrieval.hasher import BinaryAutoencoder
from retrieval.index import Hit, Index, RangeResults, SearchResults
from retrieval.tables import HammingIndex

__all__ = [
    "BinaryAutoencoder",
    "Embedder",
    "EmbeddingCache",
    "HammingIndex",
    "Hit",
    "Index",
    "RangeResults",
    "SearchResults",
    "SentenceTransformerEmbedder",
]
