"""Crash injection: SIGKILL a process in the middle of each write, then open the index.

It must open, pass its checksums, and answer exactly as before the interrupted operation or
exactly as after it, never in between.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_embeddings

from indexer import TrainConfig, build_index
from retrieval import Index

ROOT = Path(__file__).resolve().parents[1]
X, _ = make_embeddings(1500, dim=32, seed=7)
OPERATIONS = {
    "build": "build_index(path, embeddings=X[:1200], ids=range(1200), bits=16, "
    "config=TrainConfig(max_epochs=3, device='cpu'), overwrite=True)",
    "add": "Index.open(path).add(embeddings=X[1000:1200], ids=[f'n{i}' for i in range(200)])",
    "delete": "Index.open(path).delete([str(i) for i in range(0, 1000, 3)])",
    "retrain": "retrain_index(Index.open(path), TrainConfig(max_epochs=3, device='cpu', seed=5))",
}
SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from helpers import make_embeddings
from indexer import TrainConfig, build_index
from indexer.update import retrain_index
from retrieval import Index
X, _ = make_embeddings(1500, dim=32, seed=7)
path = {path!r}
print("ready", flush=True)
{operation}
print("done", flush=True)
"""


def _answers(path: Path):
    index = Index.open(path)
    assert index.verify() == [], index.verify()
    result = index.search_embeddings(X[:20], k=5)
    return len(index), result.ids.tolist(), result.distances.tolist()


def _run(path: Path, operation: str, kill_after: float | None):
    """Run the operation in a fresh process; SIGKILL it ``kill_after`` s after it starts."""
    script = SCRIPT.format(tests=str(ROOT / "tests"), path=str(path), operation=operation)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout.readline().strip() == b"ready"
    start = time.perf_counter()
    if kill_after is None:
        assert process.stdout.readline().strip() == b"done"
        process.wait(60)
        return time.perf_counter() - start
    time.sleep(kill_after)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(60)
    return None


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = tmp_path_factory.mktemp("crash") / "idx"
    build_index(
        path,
        embeddings=X[:1000],
        ids=range(1000),
        bits=16,
        config=TrainConfig(max_epochs=3, device="cpu"),
    ).close()
    return path


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_killed_write_leaves_the_old_or_the_new_index(original, tmp_path, name):
    before = _answers(original)
    finished = tmp_path / "finished" / "idx"
    shutil.copytree(original, finished)
    duration = _run(finished, OPERATIONS[name], None)
    after = _answers(finished)
    assert after != before
    outcomes = []
    for fraction in (0.02, 0.1, 0.3, 0.6):
        path = tmp_path / f"killed-{fraction}" / "idx"
        shutil.copytree(original, path)
        _run(path, OPERATIONS[name], duration * fraction)
        state = _answers(path)
        assert state in (before, after), f"{name} killed at {fraction:.0%} left a mixed index"
        outcomes.append("after" if state == after else "before")
        leftovers = [p.name for p in path.parent.iterdir() if p.name != "idx"]
        # A killed writer may leave its unfinished temporary version; it is never read.
        assert all(".tmp-" in p or ".old-" in p for p in leftovers)
    print(name, outcomes)
