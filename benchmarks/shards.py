"""Fan-out and merge cost of sharded search: `python benchmarks/shards.py [--docs 200000]`.

Builds one index over seeded clustered embeddings (384 dims, 64 bits), splits it into 2, 4
and 8 local shards, and serves 2 of them with `hashdex serve` on loopback. Each layout
answers the same 500 queries (top 10), one query per call and in one batch of 500; answers
are checked to equal the single index's. Prints milliseconds per query and the ratio to the
single index measured in the same run, and writes benchmarks/results/shards.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from loopback import free_port, start_server, stop_server
from results_table import markdown_table

from indexer import TrainConfig, build_index
from indexer.shard import split_index
from retrieval import Index
from retrieval.shards import LocalShard, RemoteShard, ShardedIndex, merge

RESULTS = Path(__file__).parent / "results"
QUERIES, K = 500, 10


def _embeddings(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(500, dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _time(search, queries: np.ndarray) -> tuple[float, float, object]:
    """(ms per query one at a time, ms per query in one batch, the batch's answers)."""
    search(queries[:20])  # warm up: tables built, connections open
    start = time.perf_counter()
    for q in queries:
        search(q[None])
    single = (time.perf_counter() - start) * 1000 / len(queries)
    start = time.perf_counter()
    answers = search(queries)
    batch = (time.perf_counter() - start) * 1000 / len(queries)
    return single, batch, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    args = parser.parse_args()
    x = _embeddings(args.docs + QUERIES)
    docs, queries = x[: args.docs], x[args.docs :]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        whole = build_index(
            tmp / "whole",
            embeddings=docs,
            ids=range(args.docs),
            bits=64,
            config=TrainConfig(max_epochs=2),
            keep_embeddings=False,
        )
        reference = None
        layouts = {"one index": lambda q: whole.search_embeddings(q, k=K)}
        for count in (2, 4, 8):
            split_index(whole.path, tmp / f"s{count}", count)
            sharded = ShardedIndex.open(tmp / f"s{count}")
            layouts[f"{count} local shards"] = lambda q, s=sharded: s.search_embeddings(q, k=K)
        servers, ports = [], [free_port(), free_port()]
        try:
            for n, port in enumerate(ports):
                servers.append(start_server(tmp / "s2" / f"shard-{n:03d}", port))
            remote = ShardedIndex([RemoteShard(f"http://127.0.0.1:{p}") for p in ports])
            layouts["2 served shards (HTTP)"] = lambda q: remote.search_embeddings(q, k=K)
            served_one = ShardedIndex([LocalShard(Index.open(tmp / "s2" / "shard-000"))])
            layouts["1 shard of 2, local"] = lambda q: served_one.search_embeddings(q, k=K)
            for name, search in layouts.items():
                single, batch, answers = _time(search, queries)
                if reference is None:
                    reference = (single, batch, answers)
                else:
                    same = np.array_equal(answers.ids, reference[2].ids) or name.startswith("1 ")
                    assert same, f"{name}: answers differ from the single index"
                rows.append(
                    {
                        "layout": name,
                        "ms/query, one at a time": single,
                        "ratio": single / reference[0],
                        "ms/query, batch of 500": batch,
                        "batch ratio": batch / reference[1],
                    }
                )
                print(rows[-1], flush=True)
        finally:
            for server in servers:
                stop_server(server)
    eight = [shard.search(queries, K, None, None) for shard in sharded.shards]
    start = time.perf_counter()
    for _ in range(20):
        merge(eight, K)
    merge_us = (time.perf_counter() - start) * 1e6 / (20 * len(queries))
    _write(rows, args.docs, merge_us)


def _write(rows: list[dict], docs: int, merge_us: float) -> None:
    lines = [
        f"# Sharded search: fan-out and merge cost ({docs:,} documents, 64 bits, top {K})",
        "",
        "Reproduce: `python benchmarks/shards.py`. Ratios are against the single index in the "
        "same run; every layout's answers equal the single index's (checked), except the "
        "one-shard row, which searches half the documents and shows one shard's own cost.",
        "",
        *markdown_table(rows, "{:.3f}"),
    ]
    lines += [
        "",
        f"The merge alone (8 shards' top-{K} answers, {QUERIES} queries in one call): "
        f"{merge_us:.2f} µs per query.",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "shards.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
