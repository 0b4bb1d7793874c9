"""build_index + Index: persistence, search semantics, re-ranking, atomic writes, bad input."""

import json

import numpy as np
import pytest
from helpers import brute_force_distances, make_embeddings

from indexer import TrainConfig, build_index
from indexer import build as build_module
from retrieval import Index

FAST = TrainConfig(max_epochs=10, device="cpu")


@pytest.fixture(scope="module")
def vectors():
    return make_embeddings(400, dim=32)


@pytest.fixture(scope="module")
def own_index(tmp_path_factory, vectors):
    x, _ = vectors
    path = tmp_path_factory.mktemp("own") / "idx"
    return build_index(
        path, embeddings=x, ids=[f"d{i}" for i in range(len(x))], bits=32, config=FAST
    )


def test_layout_and_manifest(own_index):
    names = {p.relative_to(own_index.path).as_posix() for p in own_index.path.rglob("*")}
    assert {
        "manifest.json",
        "hasher/config.json",
        "hasher/model.safetensors",
        "embeddings.npy",
        "tables/codes.npy",
        "docs.sqlite",
    } <= names
    manifest = json.loads((own_index.path / "manifest.json").read_text())
    assert manifest["bits"] == 32 and manifest["documents"] == 400
    assert manifest["embedder"] is None
    assert own_index.verify() == []


def test_open_and_search_give_identical_results(own_index, vectors):
    x, _ = vectors
    reopened = Index.open(own_index.path, mmap=False)
    for a, b in [
        (own_index.search_embeddings(x[:20], k=7), reopened.search_embeddings(x[:20], k=7))
    ]:
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.distances, b.distances)
        assert np.allclose(a.scores, b.scores)
    assert np.array_equal(own_index.encode_embeddings(x), reopened.encode_embeddings(x))


def test_distances_are_exact_hamming_distances(own_index, vectors):
    x, _ = vectors
    codes = own_index.encode_embeddings(x)
    res = own_index.search_embeddings(x[:30], k=15)
    exact = brute_force_distances(codes[:30], codes)
    assert np.array_equal(res.distances, np.sort(exact, axis=1)[:, :15])
    assert res.order == "hamming"
    assert np.allclose(res.scores, 1 - 2 * res.distances / 32)
    rows = np.array([[int(i[1:]) for i in row] for row in res.ids])
    assert np.array_equal(np.take_along_axis(exact, rows, 1), res.distances)


def test_hits_carry_documents(own_index, vectors):
    hits = own_index.search_embeddings(vectors[0][:1], k=3).hits(0)
    assert len(hits) == 3 and hits[0].id == "d0" and hits[0].distance == 0
    assert hits[0].text == "" and hits[0].metadata == {}


def test_k_larger_than_the_index_is_padded(own_index, vectors):
    res = own_index.search_embeddings(vectors[0][:2], k=450)
    assert res.ids.shape == (2, 450)
    assert (res.distances[:, 400:] == -1).all() and all(v is None for v in res.ids[:, 400:].ravel())
    assert np.isnan(res.scores[:, 400:]).all()
    assert len(res.hits(0)) == 400


def test_radius_keeps_only_near_documents(own_index, vectors):
    x, _ = vectors
    res = own_index.search_embeddings(x[:10], k=50, radius=3)
    valid = res.distances >= 0
    assert (res.distances[valid] <= 3).all()
    ball = own_index.within_embeddings(x[:10], radius=3)
    assert np.array_equal(valid.sum(axis=1), np.minimum(ball.counts(), 50))


def test_within_equals_the_brute_force_ball(own_index, vectors):
    x, _ = vectors
    codes = own_index.encode_embeddings(x)
    exact = brute_force_distances(codes[:10], codes)
    ball = own_index.within_embeddings(x[:10], radius=4)
    for i in range(10):
        got = set(ball.ids[ball.lims[i] : ball.lims[i + 1]])
        assert got == {f"d{j}" for j in np.flatnonzero(exact[i] <= 4)}
    assert [h.distance for h in ball.hits(0)] == sorted(h.distance for h in ball.hits(0))


def test_rescoring_reorders_by_cosine(own_index, vectors):
    x, _ = vectors
    res = own_index.search_embeddings(x[:20], k=10, rescore=100)
    assert res.order == "cosine"
    assert (np.diff(res.scores, axis=1) <= 1e-6).all()
    # Re-ranking all documents gives the exact float top 10 (up to float16 storage).
    full = own_index.search_embeddings(x[:20], k=10, rescore=400)
    exact = np.argsort(-(x[:20] @ x.T), axis=1)[:, :10]
    got = np.array([[int(i[1:]) for i in row] for row in full.ids])
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
    assert overlap >= 0.95


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k=0"),
        ({"k": -3}, ValueError, "k=-3"),
        ({"k": 2.5}, ValueError, "k=2.5"),
        ({"radius": -1}, ValueError, "radius=-1"),
        ({"radius": 33}, ValueError, "radius=33"),
        ({"k": 5, "rescore": 3}, ValueError, "rescore=3 must be at least k=5"),
    ],
)
def test_bad_query_arguments(own_index, vectors, kwargs, error, match):
    with pytest.raises(error, match=match):
        own_index.search_embeddings(vectors[0][:1], **kwargs)


def test_bad_query_embeddings(own_index):
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        own_index.search_embeddings(np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        own_index.search_embeddings(np.full((1, 32), np.nan, np.float32))
    with pytest.raises(TypeError, match="floating point"):
        own_index.search_embeddings(np.zeros((1, 32), np.int64))
    with pytest.raises(ValueError, match="own embeddings"):
        own_index.search(["text"])


def test_build_input_errors(tmp_path, vectors):
    x, _ = vectors
    with pytest.raises(ValueError, match="needs ids"):
        build_index(tmp_path / "a", embeddings=x)
    with pytest.raises(ValueError, match="unique"):
        build_index(tmp_path / "a", embeddings=x[:2], ids=["a", "a"])
    with pytest.raises(ValueError, match="NaN"):
        bad = x[:4].copy()
        bad[1, 0] = np.nan
        build_index(tmp_path / "a", embeddings=bad, ids=list("abcd"))
    with pytest.raises(ValueError, match="multiple of 8"):
        build_index(tmp_path / "a", embeddings=x, ids=range(len(x)), bits=12)
    with pytest.raises(ValueError, match="2 or more"):
        build_index(tmp_path / "a", embeddings=x[:1], ids=["a"])
    assert not (tmp_path / "a").exists()


def test_interrupted_build_leaves_the_old_index(tmp_path, vectors, monkeypatch):
    x, _ = vectors
    path = tmp_path / "idx"
    old = build_index(path, embeddings=x[:50], ids=range(50), bits=16, config=FAST)
    before = old.search_embeddings(x[:5], k=3).ids
    old.close()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build_module.DocumentStore, "replace", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        build_index(path, embeddings=x, ids=range(len(x)), bits=16, config=FAST, overwrite=True)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_index(path, embeddings=x, ids=range(len(x)), bits=16, config=FAST)
    reopened = Index.open(path)
    assert len(reopened) == 50 and reopened.verify() == []
    assert np.array_equal(reopened.search_embeddings(x[:5], k=3).ids, before)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"], "temporary directories are removed"


def test_overwrite_replaces_the_index(tmp_path, vectors):
    x, _ = vectors
    path = tmp_path / "idx"
    build_index(path, embeddings=x[:50], ids=range(50), bits=16, config=FAST).close()
    new = build_index(path, embeddings=x, ids=range(len(x)), bits=24, config=FAST, overwrite=True)
    assert len(new) == 400 and new.bits == 24
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_external_store_url(tmp_path, vectors):
    x, _ = vectors
    url = f"sqlite:///{tmp_path / 'external.sqlite'}"
    docs = [{"id": f"e{i}", "text": f"text {i}", "tag": i % 3} for i in range(60)]
    index = build_index(
        tmp_path / "idx", docs, embeddings=x[:60], bits=16, config=FAST, store_url=url
    )
    assert not (tmp_path / "idx" / "docs.sqlite").exists()
    hit = index.search_embeddings(x[7:8], k=1).hits(0)[0]
    assert (hit.id, hit.text, hit.metadata) == ("e7", "text 7", {"tag": 1})
    assert Index.open(tmp_path / "idx").info()["store"] == url


def test_opening_something_else_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a hashdex index"):
        Index.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        Index.open(tmp_path)


def test_newer_format_warns(tmp_path, vectors):
    x, _ = vectors
    path = tmp_path / "idx"
    build_index(path, embeddings=x[:20], ids=range(20), bits=16, config=FAST).close()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="newer hashdex"):
        Index.open(path)


def test_info_reports_balance_and_buckets(own_index):
    info = own_index.info()
    assert info["documents"] == 400 and info["bits"] == 32
    assert len(info["bit_balance"]["per_bit"]) == 32
    assert 0 < info["bit_balance"]["mean"] < 1
    assert 1 <= info["buckets"]["count"] <= 400
    sizes = own_index.hamming.bucket_sizes()
    histogram = info["buckets"]["size_histogram"]
    assert sum(histogram.values()) == info["buckets"]["count"]
    assert histogram["1"] == info["buckets"]["singletons"] == (sizes == 1).sum()
    assert info["metadata_fields"] == {}


def test_neighbourhood_counts_equal_brute_force(own_index, vectors):
    x, _ = vectors
    queries = x[:7] + 0.3
    found = own_index.neighbourhood_embeddings(queries, radius=12)
    assert np.array_equal(found.codes, own_index.encode_embeddings(queries))
    distances = brute_force_distances(found.codes, np.asarray(own_index.hamming.codes))
    expected = [np.bincount(d[d <= 12], minlength=13) for d in distances]
    assert np.array_equal(found.counts, expected)
    with pytest.raises(ValueError, match="radius"):
        own_index.neighbourhood_embeddings(queries, radius=33)


def test_outliers_are_the_worst_reconstructed(tmp_path, vectors):
    x, _ = vectors
    odd = np.random.default_rng(9).normal(size=(1, 32)).astype(np.float32)
    data = np.concatenate([x[:200], odd])
    index = build_index(tmp_path / "idx", embeddings=data, ids=range(201), bits=16, config=FAST)
    errors = index.reconstruction_error(data)
    worst = index.outliers(5)
    assert [o.id for o in worst] == [str(i) for i in np.argsort(-errors, kind="stable")[:5]]
    assert worst[0].error == pytest.approx(errors.max(), rel=1e-3)
    assert (np.diff([o.error for o in worst]) <= 0).all()


def test_repeated_query_texts_skip_the_model(own_index):
    calls = []

    class Recording:
        name, dim = "recording", 32

        def encode(self, texts, batch_size=64, show_progress=False):
            calls.extend(texts)
            return np.random.default_rng(len(calls)).normal(size=(len(texts), 32))

    index = Index.open(own_index.path, embedder=Recording())
    first = index.search(["alpha", "beta", "alpha"], k=3)
    again = index.search(["beta", "alpha"], k=3)
    assert calls == ["alpha", "beta"]
    assert np.array_equal(first.ids[[1, 0]], again.ids)
    assert np.array_equal(first.ids[0], first.ids[2])


def test_where_filters_exactly(tmp_path, vectors):
    x, _ = vectors
    docs = [
        {"id": f"w{i}", "text": f"t{i}", "topic": ["a", "b", "c"][i % 3], "n": i % 2}
        for i in range(120)
    ]
    index = build_index(tmp_path / "idx", docs, embeddings=x[:120], bits=16, config=FAST)
    codes = index.encode_embeddings(x[:120])
    res = index.search_embeddings(x[:5], k=10, where={"topic": "b"})
    exact = brute_force_distances(codes[:5], codes[1::3])
    assert np.array_equal(res.distances, np.sort(exact, axis=1)[:, :10])
    assert all(h.metadata["topic"] == "b" for i in range(5) for h in res.hits(i))
    both = index.search_embeddings(x[:2], k=100, where={"topic": ["a", "c"], "n": 1})
    expected = {f"w{i}" for i in range(120) if i % 3 != 1 and i % 2 == 1}
    assert {i for i in both.ids[0] if i is not None} == expected  # all 40, not more
    reranked = index.search_embeddings(x[:3], k=5, rescore=20, where={"topic": "c"})
    assert all(h.metadata["topic"] == "c" for h in reranked.hits(0)) and len(reranked.hits(0)) == 5
    assert (index.search_embeddings(x[:1], k=3, where={"topic": "zzz"}).distances == -1).all()
    with pytest.raises(ValueError, match="not a string, number or boolean"):
        index.search_embeddings(x[:1], where={"topic": {"nested": 1}})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate tables/codes.npy", "damaged"),
        ("truncate embeddings.npy", "damaged"),
        ("delete hasher/model.safetensors", "damaged"),
        ("garble hasher/config.json", "damaged"),
    ],
)
def test_damaged_files_give_a_clear_error(tmp_path, vectors, damage, message):
    x, _ = vectors
    path = tmp_path / "idx"
    build_index(path, embeddings=x[:50], ids=range(50), bits=16, config=FAST).close()
    action, name = damage.split(" ", 1)
    target = path / name
    if action == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif action == "delete":
        target.unlink()
    else:
        target.write_text("{not json")
    with pytest.raises(ValueError, match=message) as caught:
        Index.open(path)
    assert name in str(caught.value)


def test_verify_finds_altered_and_unknown_files(tmp_path, vectors):
    x, _ = vectors
    path = tmp_path / "idx"
    index = build_index(path, embeddings=x[:50], ids=range(50), bits=16, config=FAST)
    codes = np.load(path / "tables" / "codes.npy")
    codes[0, 0] ^= 1  # one flipped bit: still loads, but is not what was written
    np.save(path / "tables" / "codes.npy", codes)
    (path / "stray.txt").write_text("?")
    assert sorted(index.verify()) == [
        "stray.txt: not in the manifest",
        "tables/codes.npy: checksum mismatch",
    ]
