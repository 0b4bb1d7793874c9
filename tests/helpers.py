"""Seeded synthetic data for the tests (binary codes and float embeddings with structure),
and the HTTP service on loopback."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np


def make_codes(n: int, bits: int, kind: str = "clustered", seed: int = 0) -> np.ndarray:
    """Packed codes: ``random`` (uniform bits), ``clustered`` (noisy copies of 20 centres) or
    ``degenerate`` (clustered, plus all-zero, all-one and exact duplicate rows)."""
    rng = np.random.default_rng(seed)
    nbytes = bits // 8
    if kind == "random":
        return rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    centres = rng.integers(0, 256, (20, nbytes), dtype=np.uint8)
    codes = centres[rng.integers(0, len(centres), n)]
    codes ^= np.packbits(rng.random((n, bits)) < 0.04, axis=1)
    if kind == "degenerate":
        quarter = max(1, n // 4)
        codes[:quarter] = 0
        codes[quarter : 2 * quarter] = 255
        codes[2 * quarter : 3 * quarter] = codes[3 * quarter]
    return codes


def make_queries(codes: np.ndarray, bits: int, n: int, seed: int = 1) -> np.ndarray:
    """Queries near stored codes (a few bits flipped), plus a few uniform ones."""
    rng = np.random.default_rng(seed)
    near = codes[rng.integers(0, len(codes), n - n // 5)]
    near = near ^ np.packbits(rng.random((len(near), bits)) < 0.03, axis=1)
    far = rng.integers(0, 256, (n // 5, bits // 8), dtype=np.uint8)
    return np.concatenate([near, far])


def make_embeddings(n: int, dim: int = 32, topics: int = 8, seed: int = 0):
    """Unit vectors around ``topics`` random directions: (embeddings float32, topic labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dim))
    labels = rng.integers(0, topics, n)
    x = centres[labels] + 0.6 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def brute_force_distances(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Hamming distances bit by bit, independent of the library's popcount code."""
    q = np.unpackbits(queries, axis=1).astype(np.int32)
    c = np.unpackbits(codes, axis=1).astype(np.int32)
    return (q[:, None, :] != c[None, :, :]).sum(axis=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackServer:
    """``retrieval.server`` under uvicorn in a thread, on a free loopback port."""

    def __init__(self, path, api_key=None):
        import uvicorn

        from retrieval.server import create_app

        self.port = free_port()
        config = uvicorn.Config(
            create_app(path, api_key=api_key), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
