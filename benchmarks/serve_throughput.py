"""HTTP service throughput: `python benchmarks/serve_throughput.py [--seconds 10]`.

Indexes the sample corpus, starts `hashdex serve` in a subprocess on a free loopback port,
and drives POST /search from 1, 4 and 16 concurrent client connections for a bounded time
each: a new query text every request (so the model runs), top 10, then the same with
repeated texts (served by the query-embedding cache). Prints queries per second and p50/p99
latency, and writes benchmarks/results/serve_throughput.md.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from loopback import free_port, index_sample, start_server, stop_server

RESULTS = Path(__file__).parent / "results"
QUERIES = ["largest planet", "bread recipe", "football rules", "python lists", "saving money"]


def _drive(url: str, connections: int, seconds: float, fresh: bool) -> dict:
    """Bounded closed-loop load: each connection sends its next request when one returns."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            i = 0
            while time.perf_counter() < stop:
                text = QUERIES[i % len(QUERIES)] + (f" {worker}-{i}" if fresh else "")
                start = time.perf_counter()
                response = http.post("/search", json={"texts": [text], "k": 10})
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    errors[0] += response.status_code != 200
                i += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(connections)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    ms = np.array(latencies) * 1000
    return {
        "connections": connections,
        "requests": len(latencies),
        "qps": len(latencies) / wall,
        "p50 ms": float(np.percentile(ms, 50)),
        "p99 ms": float(np.percentile(ms, 99)),
        "errors": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Per concurrency level.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "idx"
        index_sample(index)
        port = free_port()
        server = start_server(index, port)
        url = f"http://127.0.0.1:{port}"
        try:
            _drive(url, 1, 1.0, fresh=True)  # warm up
            rows = [
                {"queries": kind, **_drive(url, c, args.seconds, fresh=kind == "new text")}
                for kind in ("new text", "repeated text")
                for c in (1, 4, 16)
            ]
        finally:
            stop_server(server)
    lines = [
        "# HTTP service throughput (loopback, sample corpus, 64 bits, top 10)",
        "",
        f"Closed-loop clients for {args.seconds:.0f} s per row; `new text`: a different query "
        "each request (the model runs); `repeated text`: five texts over and over (the query "
        "cache answers).",
        "",
        "| queries | connections | requests | q/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['queries']} | {r['connections']} | {r['requests']} | {r['qps']:.1f} | "
            f"{r['p50 ms']:.1f} | {r['p99 ms']:.1f} | {r['errors']} |"
            for r in rows
        ),
        "",
    ]
    text = "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_throughput.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
