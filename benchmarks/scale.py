"""Capacity model: `python benchmarks/scale.py [--postgres URL] [--train-file F.npy]`.

Measures on this machine the cost per document of each build stage and of serving:
embedding (the default model, one process, then a local Ray cluster of one actor per core),
hashing, training (rows per second from memory and streamed from a memory-mapped file),
store inserts (SQLite, and PostgreSQL when a URL is given), table building, and the bytes a
document takes in memory and on disk. Then projects build time, memory and disk for 10M,
100M and 1B documents on one machine and on N Ray workers, each worker costed as one actor
measured here. Writes benchmarks/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from results_table import markdown_table

from indexer.evaluate import load_wiki_vital
from indexer.train import TrainConfig, train_hasher
from retrieval.embed import SentenceTransformerEmbedder
from retrieval.hasher import BinaryAutoencoder
from retrieval.store import DocumentStore
from retrieval.tables import HammingIndex

RESULTS = Path(__file__).parent / "results"
BITS = 64
EMBED_DOCS = 1000
SIZES = (10_000_000, 100_000_000, 1_000_000_000)
WORKERS = (1, 8, 64)


def _rate(count: int, seconds: float) -> float:
    return count / seconds


def measure_embedding(texts: list[str]) -> dict:
    model = SentenceTransformerEmbedder()
    model.encode(texts[:32])  # load and warm up
    start = time.perf_counter()
    model.encode(texts)
    single = _rate(len(texts), time.perf_counter() - start)

    import ray

    from indexer.distributed import RayStages

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        stages = RayStages("auto")
        with tempfile.TemporaryDirectory() as tmp:
            stages.embed(texts[:64], model.name, 64, Path(tmp) / "warm.npy")  # actors up
            start = time.perf_counter()
            stages.embed(texts, model.name, 64, Path(tmp) / "e.npy")
            on_ray = _rate(len(texts), time.perf_counter() - start)
        workers = stages.workers
    finally:
        ray.shutdown()
    return {"single": single, "ray": on_ray, "ray_workers": workers}


def measure_training(rows: np.ndarray, file: Path | None) -> dict:
    """Rows per second of one training epoch in memory, and from a memory-mapped file."""
    config = TrainConfig(bits=BITS, max_epochs=1, device="cpu", max_rows=len(rows))
    start = time.perf_counter()
    train_hasher(rows, config)
    in_memory = _rate(len(rows), time.perf_counter() - start)
    report = {"in_memory": in_memory, "rows": len(rows)}
    if file is not None:
        mapped = np.load(file, mmap_mode="r")
        tracemalloc.start()  # numpy reports its buffers to tracemalloc
        start = time.perf_counter()
        train_hasher(mapped, config)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        report.update(
            mapped=_rate(len(rows), seconds),
            file_gib=file.stat().st_size / 2**30,
            file_rows=len(mapped),
            peak_numpy_mib=peak / 2**20,
        )
    return report


def measure_hashing(rows: np.ndarray) -> float:
    model = BinaryAutoencoder(rows.shape[1], BITS, rows.shape[1])
    start = time.perf_counter()
    model.encode(rows)
    return _rate(len(rows), time.perf_counter() - start)


def measure_store(url: str, texts: list[str], n: int) -> dict:
    store = DocumentStore(url, f"scale_{os.getpid()}", create=True)
    try:
        docs = [texts[i % len(texts)] for i in range(n)]
        start = time.perf_counter()
        store.replace([], range(n), [f"d{i}" for i in range(n)], docs, [{"topic": "x"}] * n)
        return {"docs_per_s": _rate(n, time.perf_counter() - start)}
    finally:
        store.drop()
        store.close()


def measure_tables(n: int) -> dict:
    import faiss

    codes = np.random.default_rng(0).integers(0, 256, (n, BITS // 8), dtype=np.uint8)
    index = HammingIndex(BITS)
    start = time.perf_counter()
    index.add(codes, np.arange(n))
    index.search(codes[:1], 10)  # builds the substring tables
    seconds = time.perf_counter() - start
    # The FAISS tables as serialised (about their size in memory), plus ids and codes.
    tables = faiss.serialize_index_binary(index.multi).nbytes
    return {
        "codes_per_s": _rate(n, seconds),
        "ram_bytes_per_doc": (tables + index.ids.nbytes + index.codes.nbytes) / n,
    }


def project(costs: dict) -> list[dict]:
    """Build time, serving memory and disk for each size, on one machine and N workers.

    Embedding and hashing divide among the workers (each costed as one measured Ray actor;
    "1 machine" is the single process); training is fixed (a sample of at most 1M rows);
    store inserts and table building run once, on the driver.
    """
    rows = []
    per_actor_embed = costs["embed"]["ray"] / costs["embed"]["ray_workers"]
    train_rows = 4.5e6  # 5 epochs over the 900k training rows of the 1M-row sample
    for n in SIZES:
        fixed = train_rows / costs["train"]["in_memory"]
        driver = n / costs["store"]["sqlite"]["docs_per_s"] + n / costs["tables"]["codes_per_s"]
        for workers in WORKERS:
            embed_rate = costs["embed"]["single"] if workers == 1 else per_actor_embed * workers
            parallel = n / embed_rate + n / (costs["hash"] * workers)
            rows.append(
                {
                    "documents": f"{n:,}",
                    "setup": "1 machine (2 cores)" if workers == 1 else f"{workers} Ray workers",
                    "build hours": (parallel + fixed + driver) / 3600,
                    "of which embedding": (n / embed_rate) / (parallel + fixed + driver),
                    "serving RAM GiB": n * costs["bytes"]["ram"] / 2**30,
                    "disk GiB": n * costs["bytes"]["disk"] / 2**30,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL SQLAlchemy URL to measure inserts on")
    parser.add_argument("--train-file", type=Path, help="a float (n, dim) .npy to stream from")
    parser.add_argument("--train-rows", type=int, default=200_000)
    args = parser.parse_args()

    texts, _ = load_wiki_vital()
    costs: dict = {"embed": measure_embedding(texts[:EMBED_DOCS])}
    print(costs, flush=True)
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(args.train_rows, 384)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    costs["train"] = measure_training(rows, args.train_file)
    costs["hash"] = measure_hashing(rows)
    print(costs, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{tmp}/docs.sqlite"
        costs["store"] = {"sqlite": measure_store(sqlite, texts, 100_000)}
        store_bytes = Path(tmp, "docs.sqlite").stat().st_size / 100_000
    if args.postgres:
        costs["store"]["postgresql"] = measure_store(args.postgres, texts, 100_000)
    costs["tables"] = measure_tables(1_000_000)
    codes_ids = BITS // 8 + 8
    costs["bytes"] = {
        "ram": costs["tables"]["ram_bytes_per_doc"],
        "disk": codes_ids + 384 * 2 + store_bytes,
        "store_disk": store_bytes,
    }
    costs["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(costs, indent=1), flush=True)
    _write(costs, project(costs))


def _write(costs: dict, projection: list[dict]) -> None:
    e, t, s = costs["embed"], costs["train"], costs["store"]
    measured = [
        {"stage": "embed, one process (docs/s)", "measured": e["single"], "ratio": 1.0},
        {
            "stage": f"embed, local Ray, {e['ray_workers']} actors (docs/s)",
            "measured": e["ray"],
            "ratio": e["ray"] / e["single"],
        },
        {"stage": "train, rows in memory (rows/s)", "measured": t["in_memory"], "ratio": 1.0},
    ]
    if "mapped" in t:
        measured.append(
            {
                "stage": f"train, streamed from a {t['file_gib']:.1f} GiB memory-mapped file "
                f"of {t['file_rows']:,} rows (rows/s)",
                "measured": t["mapped"],
                "ratio": t["mapped"] / t["in_memory"],
            }
        )
    measured += [
        {"stage": "hash (docs/s)", "measured": costs["hash"], "ratio": float("nan")},
        {"stage": "store, SQLite (docs/s)", "measured": s["sqlite"]["docs_per_s"], "ratio": 1.0},
    ]
    if "postgresql" in s:
        measured.append(
            {
                "stage": "store, PostgreSQL (docs/s)",
                "measured": s["postgresql"]["docs_per_s"],
                "ratio": s["postgresql"]["docs_per_s"] / s["sqlite"]["docs_per_s"],
            }
        )
    measured += [
        {
            "stage": "tables, 1M codes (codes/s)",
            "measured": costs["tables"]["codes_per_s"],
            "ratio": float("nan"),
        },
        {
            "stage": "serving RAM (bytes/doc)",
            "measured": costs["bytes"]["ram"],
            "ratio": float("nan"),
        },
        {"stage": "disk (bytes/doc)", "measured": costs["bytes"]["disk"], "ratio": float("nan")},
    ]
    lines = [
        "# Capacity model",
        "",
        "Reproduce: `python benchmarks/scale.py --postgres URL --train-file FILE.npy` "
        "(2-core CPU machine, no GPU). Ratios compare runs of the same stage in this process.",
        "",
        "## Measured per-document costs",
        "",
        *markdown_table(measured),
    ]
    if "mapped" in t:
        lines += [
            "",
            f"Training from the file (a seeded sample of {t['rows']:,} of its rows, read in "
            f"one pass in file order, then one epoch) held at most {t['peak_numpy_mib']:.0f} "
            "MiB of numpy buffers: the sample, never the file.",
        ]
    lines += [
        "",
        "## Projection",
        "",
        "Build time = embedding and hashing split over the workers + training on a 1M-row "
        "sample + store inserts (SQLite) and table building on one driver. Serving RAM is the "
        "Hamming tables (codes, ids, substring tables); disk adds float16 embeddings and the "
        "store.",
        "",
        *markdown_table(projection),
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
