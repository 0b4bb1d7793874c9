"""Load and durability: `python benchmarks/load.py [--seconds 60] [--clients 8]`.

Runs bounded concurrent loopback clients against `hashdex serve` on the sample corpus for a
fixed time: most search, some add documents and delete them again. Then it stops the
server, starts it again, and checks every acknowledged write (an acknowledged add must be
there unless its delete was acknowledged too; an acknowledged delete must be gone). Reports
requests served, p50/p99 latency, errors (must be 0) and writes lost (must be 0), and writes
benchmarks/results/load.md.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
from loopback import free_port, index_sample, start_server, stop_server

RESULTS = Path(__file__).parent / "results"
WRITERS = 2


def _client(url, worker, stop, log, lock):
    """Searchers search; writers add a document, search for it, and delete every other one."""
    writer = worker < WRITERS
    with httpx.Client(base_url=url, timeout=120) as http:
        i = 0
        while time.perf_counter() < stop:
            doc_id = f"load-{worker}-{i}"
            if writer:
                doc = {"id": doc_id, "text": f"Load test note {i} from writer {worker}."}
                add = partial(http.post, "/documents", json={"documents": [doc]})
                calls = [("add", doc_id, add)]
                if i % 2:
                    calls.append(("delete", doc_id, partial(http.delete, f"/documents/{doc_id}")))
            else:
                text = f"question {i} about planets and music"
                calls = [("search", None, partial(http.post, "/search", json={"texts": [text]}))]
            for kind, target, call in calls:
                start = time.perf_counter()
                try:
                    status = call().status_code
                except httpx.TransportError:
                    status = 0  # counted as an error
                with lock:
                    log.append((kind, target, status, time.perf_counter() - start))
            i += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    log: list[tuple] = []
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "idx"
        index_sample(index)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(index, port)
        stop = time.perf_counter() + args.seconds
        threads = [
            threading.Thread(target=_client, args=(url, w, stop, log, lock))
            for w in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop_server(server)
        server = start_server(index, port)  # the restart: only what is on disk counts
        acked_adds = {t for kind, t, status, _ in log if kind == "add" and status == 200}
        acked_deletes = {t for kind, t, status, _ in log if kind == "delete" and status == 200}
        lost = 0
        with httpx.Client(base_url=url, timeout=60) as http:
            for doc_id in sorted(acked_adds | acked_deletes):
                present = http.get(f"/documents/{doc_id}").status_code == 200
                lost += present == (doc_id in acked_deletes)
            documents = http.get("/health").json()["documents"]
        stop_server(server)
    rows = []
    for kind in ("search", "add", "delete"):
        mine = [entry for entry in log if entry[0] == kind]
        ms = np.array([entry[3] for entry in mine]) * 1000
        rows.append(
            f"| {kind} | {len(mine)} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} "
            f"| {sum(entry[2] != 200 for entry in mine)} |"
        )
    text = "\n".join(
        [
            "# Load and durability (loopback, sample corpus)",
            "",
            f"{args.clients} closed-loop clients for {args.seconds:.0f} s ({WRITERS} writers "
            "adding documents and deleting every other one, the rest searching), then a "
            "server restart and a check of every acknowledged write.",
            "",
            "| request | served | p50 ms | p99 ms | errors |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Acknowledged writes checked after the restart: {len(acked_adds | acked_deletes)}; "
            f"lost: {lost}. Documents after the restart: {documents} "
            f"(160 + {len(acked_adds)} added - {len(acked_deletes)} deleted).",
            "",
        ]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
