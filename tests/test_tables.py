"""HammingIndex against a brute-force oracle, for every search strategy."""

import numpy as np
import pytest
from helpers import brute_force_distances, make_codes, make_queries

from retrieval import tables
from retrieval.tables import HammingIndex


@pytest.fixture(params=["auto", "probe", "scan"])
def strategy(request, monkeypatch):
    """Force multi-index probing (as far as shells stay small) or the FAISS scan, or let the
    cost model choose."""
    if request.param == "probe":
        monkeypatch.setattr(tables, "PROBE_COST", 0.0)
        monkeypatch.setattr(tables, "PROBE_RETRY", 0)
    elif request.param == "scan":
        monkeypatch.setattr(tables, "PROBE_COST", np.inf)
    return request.param


def _index(codes, seed=0):
    ids = np.random.default_rng(seed).permutation(10 * len(codes))[: len(codes)]
    index = HammingIndex(codes.shape[1] * 8)
    index.add(codes, ids)
    return index, ids


def _check_knn(index, ids, codes, queries, k):
    D, I = index.search(queries, k)
    exact = brute_force_distances(queries, codes)
    n = len(codes)
    assert D.shape == I.shape == (len(queries), k)
    assert np.array_equal(D[:, : min(k, n)], np.sort(exact, axis=1)[:, :k])
    assert (D[:, n:] == -1).all() and (I[:, n:] == -1).all()
    position = {int(v): i for i, v in enumerate(ids)}
    for qi in range(len(queries)):
        found = [position[int(j)] for j in I[qi, : min(k, n)]]
        assert len(set(found)) == len(found)
        assert np.array_equal(exact[qi, found], D[qi, : min(k, n)])


@pytest.mark.parametrize("bits", [16, 64, 128])
@pytest.mark.parametrize("kind", ["random", "clustered", "degenerate"])
def test_knn_equals_brute_force(strategy, bits, kind):
    codes = make_codes(400, bits, kind)
    index, ids = _index(codes)
    for k in (1, 10, 399, 400, 1000):
        _check_knn(index, ids, codes, make_queries(codes, bits, 25), k)


@pytest.mark.parametrize("bits", [16, 64])
@pytest.mark.parametrize("kind", ["clustered", "degenerate"])
def test_hamming_ball_against_oracle(strategy, bits, kind):
    codes = make_codes(300, bits, kind)
    index, ids = _index(codes)
    queries = make_queries(codes, bits, 20)
    exact = brute_force_distances(queries, codes)
    previous = None
    for radius in [0, 1, 2, 3, bits]:
        lims, D, I = index.within(queries, radius)
        assert lims[0] == 0 and lims[-1] == len(I) == len(D)
        sets = []
        for qi in range(len(queries)):
            got = I[lims[qi] : lims[qi + 1]]
            dist = D[lims[qi] : lims[qi + 1]]
            assert len(set(got.tolist())) == len(got), "no duplicates"
            assert (np.diff(dist) >= 0).all(), "ordered by distance"
            assert set(got.tolist()) == set(ids[exact[qi] <= radius].tolist())
            sets.append(set(got.tolist()))
        if previous is not None:
            assert all(p <= s for p, s in zip(previous, sets)), "monotone in the radius"
        previous = sets
    assert all(s == set(ids.tolist()) for s in previous), "full radius = everything"


def test_removal_then_search(strategy):
    codes = make_codes(500, 64, "degenerate")
    index, ids = _index(codes)
    gone = ids[::3]
    assert index.remove(gone) == len(gone)
    assert index.remove(gone) == 0
    keep = ~np.isin(ids, gone)
    _check_knn(index, ids[keep], codes[keep], make_queries(codes, 64, 20), 10)
    _, _, I = index.within(codes[:5], 64)
    assert not np.isin(I, gone).any()


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_gives_identical_answers(tmp_path, strategy, mmap):
    codes = make_codes(400, 64, "degenerate")
    index, _ = _index(codes)
    queries = make_queries(codes, 64, 30)
    index.save(tmp_path / "t")
    loaded = HammingIndex.load(tmp_path / "t", mmap=mmap)
    for a, b in zip(index.search(queries, 7), loaded.search(queries, 7)):
        assert np.array_equal(a, b)
    for a, b in zip(index.within(queries, 3), loaded.within(queries, 3)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("bits", "n", "m"),
    [(64, 1000, 6), (64, 10**6, 3), (128, 10**7, 6), (16, 10**6, 1), (256, 10, 32)],
)
def test_substrings_are_about_log2_n_bits(bits, n, m):
    assert tables.substring_count(bits, n) == m


def test_codes_of_returns_stored_codes_by_id():
    codes = make_codes(300, 64, "degenerate")
    index, ids = _index(codes)
    pick = np.random.default_rng(3).permutation(len(ids))[:50]
    assert np.array_equal(index.codes_of(ids[pick]), codes[pick])
    index.remove(ids[pick[:5]])
    with pytest.raises(ValueError, match=f"id {ids[pick[0]]} is not in the index"):
        index.codes_of(ids[pick])
    with pytest.raises(ValueError, match="not in the index"):
        HammingIndex(64).codes_of([1])


def test_empty_index_and_empty_batch():
    index = HammingIndex(64)
    D, I = index.search(np.zeros((2, 8), np.uint8), 3)
    assert (D == -1).all() and (I == -1).all()
    lims, D, I = index.within(np.zeros((2, 8), np.uint8), 5)
    assert list(lims) == [0, 0, 0] and len(I) == 0
    codes = make_codes(10, 64)
    index.add(codes, np.arange(10))
    assert index.search(np.zeros((0, 8), np.uint8), 3)[0].shape == (0, 3)


def test_bad_arguments_are_rejected():
    index = HammingIndex(64)
    index.add(make_codes(10, 64), np.arange(10))
    with pytest.raises(ValueError, match="k=0"):
        index.search(make_codes(1, 64), 0)
    with pytest.raises(ValueError, match="radius=-1"):
        index.within(make_codes(1, 64), -1)
    with pytest.raises(ValueError, match="radius=65"):
        index.within(make_codes(1, 64), 65)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(make_codes(1, 64), [3])
    with pytest.raises(ValueError, match="one per code"):
        index.add(make_codes(2, 64), [100])
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros((1, 16), np.uint8), 1)


def test_probing_that_measured_slower_than_scanning_waits_its_turn(monkeypatch):
    monkeypatch.setattr(tables, "PROBE_COST", 0.0)
    codes = make_codes(2000, 64)
    index, _ = _index(codes)
    queries = make_queries(codes, 64, 5)
    probed = []
    real_ball = index._ball
    monkeypatch.setattr(index, "_ball", lambda *a: probed.append(1) or real_ball(*a))
    index.search(queries, 3)
    assert probed, "an unmeasured index probes"
    index._seconds = {"probe": 1.0, "scan": 1e-6}
    probed.clear()
    for _ in range(tables.PROBE_RETRY):
        index.search(queries, 3)
    assert not probed, "the scan serves while it is measured faster"
    index._seconds["probe"] = 1.0  # keep the scan ahead until the retry
    index.search(queries, 3)
    assert probed, "probing is retried after PROBE_RETRY batches"


@pytest.mark.slow
@pytest.mark.parametrize("bits", [64, 128])
def test_a_million_codes_match_the_flat_scan(bits):
    """At scale, with every path in play, distances equal FAISS's exhaustive scan."""
    import faiss

    codes = make_codes(1_000_000, bits, "clustered")
    index, _ = _index(codes)
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(codes)
    queries = make_queries(codes, bits, 300)
    for k in (1, 10, 100):
        assert np.array_equal(index.search(queries, k)[0], flat.search(queries, k)[0])
        for q in queries[:20]:  # single queries take the same paths one at a time
            assert np.array_equal(index.search(q[None], k)[0], flat.search(q[None], k)[0])
    lims, D, _ = index.within(queries, 3)
    flat_lims, _, _ = flat.range_search(queries, 4)
    assert np.array_equal(lims, flat_lims.astype(np.int64))
    assert (D <= 3).all()
