"""The embed and encode stages of a build on a Ray cluster (``hashdex index --ray auto``).

Ray Data runs each stage as ``map_batches`` over actors that hold the model (a GPU each
where the cluster has GPUs, else CPUs). The embedded blocks are materialised in Ray's object
store (which spills to disk past its memory) and merged, in row order, into one
memory-mapped embedding file; the hasher trains from that file on the driver; a second pass
encodes the blocks with the trained hasher. Everything else (reading, training, writing the
index) is the single-process build's own code, so the result is a normal index, with the
same codes as a single-process build of the same corpus, model and seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from retrieval.embed import SentenceTransformerEmbedder, normalize
from retrieval.hasher import BinaryAutoencoder

log = logging.getLogger("hashdex")

# Rows per map_batches call: big enough to keep a model busy, small enough to stream.
BLOCK_ROWS = 1024


class _Embed:
    """A Ray actor holding the sentence-transformers model."""

    def __init__(self, model: str, batch_size: int, device: str | None):
        self.embedder = SentenceTransformerEmbedder(model, device=device)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        vectors = normalize(self.embedder.encode(list(batch["text"]), self.batch_size))
        return {"row": batch["row"], "embedding": vectors.astype(np.float32)}


class _Encode:
    """A Ray actor holding the trained hasher."""

    def __init__(self, config: dict, state: dict, device: str):
        self.model = BinaryAutoencoder(**config)
        self.model.load_state_dict(state)
        self.model.to(device).eval()

    def __call__(self, batch: dict) -> dict:
        return {"row": batch["row"], "code": self.model.encode(np.stack(batch["embedding"]))}


class RayStages:
    """A connection to a Ray cluster (``address``: "auto", "local" for a new local one, or
    ``ray://host:port``) and the two distributed build stages."""

    def __init__(self, address: str = "auto", workers: int | None = None):
        import ray

        if not ray.is_initialized():
            ray.init(
                address=None if address == "local" else address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        self.ray = ray
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        self.workers = workers or self.gpus or cpus
        if self.gpus:  # an actor holds a whole GPU
            self.workers = min(self.workers, self.gpus)
        log.info("ray: %d CPUs, %d GPUs, %d workers", cpus, self.gpus, self.workers)

    def _actor_options(self, blocks: int) -> dict:
        """A pool of ``workers`` actors (no more than there are blocks to give them), a GPU
        each where the cluster has them."""
        pool = self.ray.data.ActorPoolStrategy(size=max(1, min(self.workers, blocks)))
        return {"compute": pool, "num_gpus": 1} if self.gpus else {"compute": pool, "num_cpus": 1}

    def embed(self, texts: list[str], model: str, batch_size: int, out: Path):
        """Embed ``texts`` on the cluster into a float32 (n, dim) ``.npy`` file at ``out``;
        returns (the file memory-mapped, the embedded dataset's handle for ``encode``)."""
        blocks = max(1, -(-len(texts) // BLOCK_ROWS))
        data = self.ray.data.from_items(
            [{"row": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=blocks
        )
        embedded = data.map_batches(
            _Embed,
            fn_constructor_kwargs={
                "model": model,
                "batch_size": batch_size,
                "device": "cuda" if self.gpus else "cpu",
            },
            batch_size=BLOCK_ROWS,
            batch_format="numpy",
            **self._actor_options(blocks),
        ).materialize()
        vectors = None
        for batch in embedded.iter_batches(batch_size=BLOCK_ROWS, batch_format="numpy"):
            block = np.stack(batch["embedding"])
            if vectors is None:
                vectors = np.lib.format.open_memmap(
                    out, mode="w+", dtype=np.float32, shape=(len(texts), block.shape[1])
                )
            vectors[batch["row"]] = block
        vectors.flush()
        return vectors, embedded

    def encode(self, embedded, hasher: BinaryAutoencoder, n: int) -> np.ndarray:
        """The packed codes of the embedded dataset's rows, in row order."""
        state = {k: v.detach().cpu() for k, v in hasher.state_dict().items()}
        coded = embedded.map_batches(
            _Encode,
            fn_constructor_kwargs={
                "config": hasher.get_config_dict(),
                "state": state,
                "device": "cuda" if self.gpus else "cpu",
            },
            batch_size=BLOCK_ROWS * 8,
            batch_format="numpy",
            **self._actor_options(embedded.num_blocks()),
        )
        codes = np.zeros((n, hasher.bits // 8), np.uint8)
        for batch in coded.iter_batches(batch_size=BLOCK_ROWS * 8, batch_format="numpy"):
            codes[batch["row"]] = np.stack(batch["code"])
        return codes
