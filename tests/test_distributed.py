"""The Ray build on a local Ray cluster, against the single-process build of the same corpus."""

import numpy as np
import pytest
import ray
from conftest import SAMPLE

from indexer import build_index, distributed
from retrieval import Index


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_build_equals_the_single_process_build(
    ray_cluster, sample_index, tmp_path, monkeypatch
):
    monkeypatch.setattr(distributed, "BLOCK_ROWS", 48)  # 4 blocks over the 2 actors
    path = tmp_path / "ray-idx"
    build_index(path, SAMPLE, ray="auto", cache=False).close()
    assert not list(tmp_path.glob(".*")), "the staging files are removed"
    with Index.open(path) as built:
        one = sample_index
        assert built.manifest["build"]["ray_workers"] == 2
        assert built.verify() == []
        rows = np.argsort(np.asarray(built.hamming.ids))
        expected = np.argsort(np.asarray(one.hamming.ids))
        assert np.array_equal(
            np.asarray(built.hamming.codes)[rows], np.asarray(one.hamming.codes)[expected]
        )
        assert (
            np.abs(
                np.asarray(built.embeddings, np.float32) - np.asarray(one.embeddings, np.float32)
            ).max()
            < 1e-3
        )  # float16, from batches of other sizes
        assert built.store.get(range(160)) == one.store.get(range(160))
        query = ["which planet is the largest"]
        assert np.array_equal(built.search(query).ids, one.search(query).ids)


def test_ray_refuses_your_own_embeddings(tmp_path):
    with pytest.raises(ValueError, match="ray= embeds texts"):
        build_index(
            tmp_path / "x", embeddings=np.eye(4, dtype=np.float32), ids=range(4), ray="auto"
        )


def test_cli_index_with_ray(ray_cluster, sample_index, tmp_path):
    from click.testing import CliRunner

    from indexer.cli import main

    out = tmp_path / "idx"
    args = ["-q", "index", str(SAMPLE), "--out", str(out), "--ray", "auto", "--no-cache"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    with Index.open(out) as built:
        assert np.array_equal(
            np.asarray(built.hamming.codes), np.asarray(sample_index.hamming.codes)
        )
