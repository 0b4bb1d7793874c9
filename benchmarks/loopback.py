"""Shared by the service benchmarks: index the sample corpus, run `hashdex serve` on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample.jsonl"
HASHDEX = [sys.executable, "-m", "indexer.cli"]


def index_sample(path: Path) -> None:
    subprocess.run([*HASHDEX, "-q", "index", str(SAMPLE), "--out", str(path)], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, port: int) -> subprocess.Popen:
    """`hashdex serve` in a subprocess; returns once /health answers (or raises)."""
    server = subprocess.Popen(
        [*HASHDEX, "serve", str(index), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        except httpx.TransportError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("hashdex serve did not start") from None
            time.sleep(0.2)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(30)
