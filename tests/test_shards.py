"""Sharded search against its oracle: one index over the same documents."""

import numpy as np
import pytest
from helpers import LoopbackServer, make_embeddings

from indexer import TrainConfig, build_index
from indexer.shard import split_index
from retrieval import Index
from retrieval.shards import LocalShard, RemoteShard, ShardedIndex

FAST = TrainConfig(max_epochs=10, device="cpu")


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """500 documents with metadata at 16 bits: short codes, so many ties to break."""
    x, labels = make_embeddings(500, dim=32)
    docs = [{"id": f"d{i}", "text": f"doc {i}", "label": int(labels[i])} for i in range(500)]
    path = tmp_path_factory.mktemp("whole") / "idx"
    build_index(path, docs, embeddings=x, bits=16, config=FAST).close()
    return path, x


@pytest.fixture(scope="module")
def sharded(whole, tmp_path_factory):
    path, _ = whole
    out = tmp_path_factory.mktemp("sharded") / "shards"
    assert split_index(path, out, shards=3) == [167, 167, 166]
    return out


def _same(found, expected):
    assert np.array_equal(found.ids, expected.ids)
    assert np.array_equal(found.distances, expected.distances)
    assert np.allclose(found.scores, expected.scores, equal_nan=True)
    for i in range(len(expected)):
        assert found.hits(i) == expected.hits(i)


@pytest.mark.parametrize(
    "options",
    [
        {"k": 10},
        {"k": 1},
        {"k": 200},  # more than a shard holds
        {"k": 600},  # more than the index holds: padded alike
        {"k": 50, "radius": 3},
        {"k": 20, "where": {"label": [2, 5]}},
    ],
)
def test_local_shards_answer_as_one_index(whole, sharded, options):
    path, x = whole
    queries = x[:40] + 0.2 * np.random.default_rng(4).normal(size=(40, 32)).astype(np.float32)
    with Index.open(path) as index, ShardedIndex.open(sharded) as shards:
        _same(
            shards.search_embeddings(queries, **options),
            index.search_embeddings(queries, **options),
        )


def test_each_shard_is_a_whole_index(sharded):
    for number in range(3):
        with Index.open(sharded / f"shard-{number:03d}") as shard:
            assert shard.verify() == [] and shard.bits == 16
            assert len(shard) == (166 if number == 2 else 167)


def test_served_shards_answer_as_one_index(whole, sharded):
    path, x = whole
    servers = [LoopbackServer(sharded / f"shard-{n:03d}") for n in (1, 2)]
    try:
        remote = [RemoteShard(server.url) for server in servers]
        local = LocalShard(Index.open(sharded / "shard-000"))
        with Index.open(path) as index, ShardedIndex([local, *remote]) as shards:
            for options in ({"k": 10}, {"k": 30, "radius": 4, "where": {"label": 1}}):
                _same(
                    shards.search_embeddings(x[:25], **options),
                    index.search_embeddings(x[:25], **options),
                )
    finally:
        for server in servers:
            server.stop()


def test_bad_splits_and_mismatched_shards(whole, sharded, tmp_path):
    path, _ = whole
    with pytest.raises(ValueError, match="between 1 and the 500"):
        split_index(path, tmp_path / "none", shards=0)
    with pytest.raises(FileExistsError, match="overwrite"):
        split_index(path, sharded, shards=2)
    with pytest.raises(ValueError, match="not a sharded"):
        ShardedIndex.open(path)
    other = build_index(
        tmp_path / "other", embeddings=make_embeddings(50)[0], ids=range(50), bits=32, config=FAST
    )
    with pytest.raises(ValueError, match="disagree on bits"):
        ShardedIndex([LocalShard(Index.open(sharded / "shard-000")), LocalShard(other)])


def test_cli_shards_and_queries_them(sample_index, tmp_path):
    from click.testing import CliRunner

    from indexer.cli import main

    runner = CliRunner()
    cli_index = sample_index.path
    out = tmp_path / "shards"
    split = runner.invoke(main, ["-q", "shard", str(cli_index), "--shards", "4", "--out", str(out)])
    assert split.exit_code == 0, split.output
    assert "4 shards of 40, 40, 40, 40 documents" in split.output
    ask = ["-q", "query", "-k", "5", "--json", "--where", "topic=music"]
    whole = runner.invoke(main, [*ask[:2], str(cli_index), "a song", *ask[2:]])
    parts = runner.invoke(main, [*ask[:2], str(out), "a song", *ask[2:]])
    assert whole.exit_code == parts.exit_code == 0 and whole.output == parts.output
    refused = runner.invoke(main, ["query", str(out), "a song", "--rescore", "50"])
    assert refused.exit_code != 0 and "not offered over shards" in refused.output
