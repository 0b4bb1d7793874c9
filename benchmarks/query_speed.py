"""Query-path speed: hashdex's HammingIndex against FAISS, side by side in one process.

    python benchmarks/query_speed.py [--sizes 10000,100000,1000000,10000000] [--bits 64,128]

Codes have structure: the hasher's own codes of the development corpus (wiki-vital, its
cached embeddings), tiled with random bit flips up to each size; queries are the codes of the
held-out documents. For each size and code length it measures exact top-10 queries per
second (single queries and batches of 1,000) for HammingIndex and FAISS IndexBinaryFlat,
within(radius=2) against IndexBinaryHash(nflip=2) at 64 bits, build and load times, and bytes
per document; then the end-to-end latency of Index.search on the sample corpus. Writes
benchmarks/results/query_speed.md and .png.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import faiss
import numpy as np

from indexer.evaluate import load_wiki_vital, save_plot, split_queries
from indexer.train import TrainConfig, train_hasher
from retrieval.embed import EmbeddingCache, SentenceTransformerEmbedder, embed_texts
from retrieval.tables import HammingIndex

RESULTS = Path(__file__).parent / "results"
FLIP_RATE = 0.03  # each tiled copy differs from its source code in ~3% of bits


def structured_codes(bits: int, sizes: list[int], seed: int = 0):
    """(database codes of max(sizes), query codes) from the hasher on real embeddings."""
    texts, _ = load_wiki_vital()
    x, _ = embed_texts(SentenceTransformerEmbedder(), texts, EmbeddingCache())
    queries, database = split_queries(len(x))
    model = train_hasher(x[database], TrainConfig(bits=bits, max_epochs=20, seed=seed)).model
    base, query_codes = model.encode(x[database]), model.encode(x[queries])
    rng = np.random.default_rng(seed)
    n = max(sizes)
    codes = base[rng.integers(0, len(base), n)]
    codes[: len(base)] = base
    for lo in range(len(base), n, 1 << 20):
        block = codes[lo : lo + (1 << 20)]
        block ^= np.packbits(rng.random((len(block), bits)) < FLIP_RATE, axis=1)
    return codes, query_codes


def _timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` runs, seconds."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _single_qps(search, queries: np.ndarray, budget_s: float = 2.0) -> float:
    """Queries per second, one query per call, over at most ``budget_s`` seconds."""
    done, start = 0, time.perf_counter()
    while done < len(queries) and time.perf_counter() - start < budget_s:
        search(queries[done : done + 1])
        done += 1
    return done / (time.perf_counter() - start)


def bench_codes(bits: int, sizes: list[int], k: int = 10) -> list[dict]:
    all_codes, queries = structured_codes(bits, sizes)
    rows = []
    for n in sizes:
        rows.append(bench_size(bits, np.ascontiguousarray(all_codes[:n]), queries, k))
        print(_format_row(rows[-1]), flush=True)
    return rows


def bench_size(bits: int, codes: np.ndarray, queries: np.ndarray, k: int) -> dict:
    """Every measurement at one size, HammingIndex and FAISS side by side."""
    n = len(codes)
    row = {"bits": bits, "n": n}
    ours = HammingIndex(bits)
    row["build hashdex s"] = _timed(lambda: (ours.add(codes, np.arange(n)), ours.multi))
    # Memory: the FAISS tables as serialised (about their size in memory), ids and codes.
    tables_bytes = faiss.serialize_index_binary(ours.multi).nbytes
    row["bytes/doc hashdex"] = (tables_bytes + ours.ids.nbytes + ours.codes.nbytes) / n
    flat = faiss.IndexBinaryFlat(bits)
    row["build flat s"] = _timed(lambda: flat.add(codes))
    row["bytes/doc raw codes+ids"] = bits / 8 + 8

    # Exactness on the batch: the same distances as the exhaustive scan.
    d_ours, _ = ours.search(queries, k)
    d_flat, _ = flat.search(queries, k)
    row["exact"] = bool(np.array_equal(d_ours, d_flat))
    row["median k-th distance"] = float(np.median(d_flat[:, -1]))

    row["single qps hashdex"] = _single_qps(lambda q: ours.search(q, k), queries)
    row["single qps flat"] = _single_qps(lambda q: flat.search(q, k), queries)
    row["batch s hashdex"] = _timed(lambda: ours.search(queries, k))
    row["batch s flat"] = _timed(lambda: flat.search(queries, k))

    if bits == 64:
        hashed = faiss.IndexBinaryHash(bits, bits)
        hashed.nflip = 2
        row["build hash s"] = _timed(lambda: hashed.add(codes))
        row["within2 s hashdex"] = _timed(lambda: ours.within(queries, 2))
        row["within2 s hash"] = _timed(lambda: hashed.range_search(queries, 3))
        lims_ours, _, _ = ours.within(queries, 2)
        lims_hash, _, _ = hashed.range_search(queries, 3)
        row["within2 same counts"] = bool(np.array_equal(lims_ours, lims_hash))

    with tempfile.TemporaryDirectory() as tmp:
        ours.save(tmp)
        row["load mmap s"] = _timed(lambda: HammingIndex.load(tmp, mmap=True))
        loaded = HammingIndex.load(tmp, mmap=True)
        row["first query after load s"] = _timed(lambda: loaded.search(queries[:1], k))
    return row


def _format_row(row: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def bench_end_to_end(repeat: int = 50) -> dict:
    """Index.search latency for one text query, with and without the embedding step."""
    from indexer import build_index

    sample = Path(__file__).resolve().parents[1] / "data" / "sample.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        index = build_index(Path(tmp) / "idx", sample)
        texts = ["which planet is the largest", "how to bake bread", "penalty kick rules"]
        index.search(texts[:1], k=10)  # warm up: the model is loaded
        fresh, cached, without = [], [], []
        for i in range(repeat):
            text = [f"{texts[i % len(texts)]} {i}"]  # a new text: the model runs
            fresh.append(_timed(partial(index.search, text, k=10)))
            cached.append(_timed(partial(index.search, text, k=10)))  # the query cache hits
            vector = index.embed(text)
            without.append(_timed(partial(index.search_embeddings, vector, k=10)))
        index.close()
    ms = lambda values, p: 1000 * float(np.percentile(values, p))  # noqa: E731
    return {
        "new text": (ms(fresh, 50), ms(fresh, 99)),
        "repeated text (query cache)": (ms(cached, 50), ms(cached, 99)),
        "embedding given (search_embeddings)": (ms(without, 50), ms(without, 99)),
    }


def report(rows: list[dict], end_to_end: dict) -> str:
    lines = [
        "# Query speed: hashdex HammingIndex against FAISS",
        "",
        f"Codes: the hasher's codes of wiki-vital, tiled with {FLIP_RATE:.0%} bit flips; "
        "1,000 held-out queries; exact top-10. Ratios > 1 mean hashdex is faster (or, for "
        "memory, larger). faiss threads: " + str(faiss.omp_get_max_threads()) + ".",
        "",
        "| bits | codes | exact | median 10th-NN distance | single q/s hashdex | "
        "single q/s Flat | ratio | batch-1000 s "
        "hashdex | batch-1000 s Flat | ratio | within(2) s hashdex | within(2) s Hash | "
        "ratio (Hash/hashdex) | build s hashdex | build s Flat | load mmap s | first query after "
        "load s | bytes/doc hashdex | / raw codes+ids |",
        "|" + "---|" * 19,
    ]
    for r in rows:
        within = (
            f"{r['within2 s hashdex']:.4f} | {r['within2 s hash']:.4f} | "
            f"{r['within2 s hash'] / r['within2 s hashdex']:.2f}"
            + ("" if r["within2 same counts"] else " (counts differ!)")
            if "within2 s hashdex" in r
            else "– | – | –"
        )
        lines.append(
            f"| {r['bits']} | {r['n']:,} | {'yes' if r['exact'] else 'NO'} | "
            f"{r['median k-th distance']:.0f} | "
            f"{r['single qps hashdex']:.0f} | {r['single qps flat']:.0f} | "
            f"{r['single qps hashdex'] / r['single qps flat']:.2f} | "
            f"{r['batch s hashdex']:.3f} | {r['batch s flat']:.3f} | "
            f"{r['batch s flat'] / r['batch s hashdex']:.2f} | {within} | "
            f"{r['build hashdex s']:.2f} | {r['build flat s']:.2f} | {r['load mmap s']:.4f} | "
            f"{r['first query after load s']:.3f} | "
            f"{r['bytes/doc hashdex']:.1f} | "
            f"{r['bytes/doc hashdex'] / r['bytes/doc raw codes+ids']:.2f} |"
        )
    lines += [
        "",
        "End to end, `Index.search` on the sample corpus (160 documents, 64 bits), one text "
        "query at a time:",
        "",
        "| | p50 ms | p99 ms |",
        "|---|---|---|",
        *(f"| {name} | {p50:.2f} | {p99:.2f} |" for name, (p50, p99) in end_to_end.items()),
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for bits in sorted({r["bits"] for r in rows}):
        mine = [r for r in rows if r["bits"] == bits]
        sizes = [r["n"] for r in mine]
        ax.plot(
            sizes, [1e3 / r["single qps hashdex"] for r in mine], "o-", label=f"hashdex {bits}b"
        )
        ax.plot(sizes, [1e3 / r["single qps flat"] for r in mine], "s--", label=f"Flat {bits}b")
    ax.set_xscale("log")
    ax.set_yscale("log")
    save_plot(fig, ax, path, "codes in the index", "ms per single top-10 query")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--bits", default="64,128")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [row for bits in args.bits.split(",") for row in bench_codes(int(bits), sizes)]
    end_to_end = bench_end_to_end()
    text = report(rows, end_to_end)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "query_speed.md").write_text(text)
    plot(rows, RESULTS / "query_speed.png")
    print(text)


if __name__ == "__main__":
    main()
