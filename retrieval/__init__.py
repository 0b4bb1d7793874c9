"""The online path of hashdex: everything a query needs, and the on-disk format."""

from retrieval.embed import Embedder, EmbeddingCache, SentenceTransformerEmbedder
from retrieval.hasher import BinaryAutoencoder
from retrieval.index import Hit, Index, Outlier, RangeResults, SearchResults
from retrieval.tables import HammingIndex

__all__ = [
    "BinaryAutoencoder",
    "Embedder",
    "EmbeddingCache",
    "HammingIndex",
    "Hit",
    "Index",
    "Outlier",
    "RangeResults",
    "SearchResults",
    "SentenceTransformerEmbedder",
]
