"""The offline path of hashdex: everything that builds or changes an index.

Names are imported on first use, so that ``hashdex query`` never loads the training code.
"""

from importlib import import_module

_EXPORTS = {
    "build_index": "indexer.build",
    "Corpus": "indexer.corpus",
    "CorpusError": "indexer.corpus",
    "Document": "indexer.corpus",
    "read_corpus": "indexer.corpus",
    "TrainConfig": "indexer.train",
    "train_hasher": "indexer.train",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")
