"""The HTTP service, driven over loopback against a real uvicorn server."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import LoopbackServer

from retrieval.server import MAX_BODY_BYTES


@pytest.fixture
def served(index_copy):
    server = LoopbackServer(index_copy)
    yield server
    server.stop()


def test_every_route(served, sample_index):
    with httpx.Client(base_url=served.url, timeout=60) as client:
        assert client.get("/health").json() == {"status": "ok", "documents": 160}
        assert client.get("/stats").json()["bits"] == 64
        found = client.post(
            "/search", json={"texts": ["the largest planet"], "k": 3, "rescore": 30}
        ).json()
        assert found["order"] == "cosine" and found["results"][0][0]["id"] == "astronomy-01"
        vector = sample_index.embed(["bread dough"]).tolist()
        by_vector = client.post(
            "/search", json={"embeddings": vector, "k": 2, "where": {"topic": "cooking"}}
        ).json()
        assert all(h["metadata"]["topic"] == "cooking" for h in by_vector["results"][0])
        doc = {
            "id": "new-1",
            "text": "Qubits are the units of quantum computers.",
            "topic": "programming",
        }
        assert client.post("/documents", json={"documents": [doc]}).json() == {
            "written": 1,
            "documents": 161,
        }
        assert client.get("/documents/new-1").json() == {
            "id": "new-1",
            "text": doc["text"],
            "metadata": {"topic": "programming"},
        }
        hits = client.post(
            "/search", json={"texts": ["quantum computing qubits"], "k": 1, "rescore": 20}
        ).json()["results"][0]
        assert hits[0]["id"] == "new-1"
        assert client.delete("/documents/new-1").json() == {"deleted": "new-1", "documents": 160}
        assert client.get("/documents/new-1").status_code == 404
        assert client.delete("/documents/new-1").status_code == 404
        assert client.get("/openapi.json").json()["info"]["title"] == "hashdex"


def test_codes_and_neighbourhood_agree_with_distances(served, sample_index):
    query = {"texts": ["how to bake bread"]}
    with httpx.Client(base_url=served.url, timeout=60) as client:
        found = client.post("/search", json={**query, "k": 8, "codes": True}).json()
        around = client.post("/neighbourhood", json={**query, "radius": 64}).json()
        plain = client.post("/search", json={**query, "k": 8}).json()
    assert "query_codes" not in plain and "code" not in plain["results"][0][0]
    (code,) = found["query_codes"]
    assert around["bits"] == 64 and around["results"][0]["code"] == code
    for hit in found["results"][0]:
        assert sum(a != b for a, b in zip(code, hit["code"])) == hit["distance"]
    distances = [hit["distance"] for hit in found["results"][0]]
    counts = around["results"][0]["counts"]
    assert (
        len(counts) == 65
        and sum(counts) == 160
        and sum(counts[: distances[-1]]) <= 8 <= sum(counts[: distances[-1] + 1])
    )
    expected = sample_index.neighbourhood(query["texts"], 64).counts[0]
    assert counts == expected.tolist()


def test_the_search_page_and_its_files_are_served(served):
    page = httpx.get(served.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("static/app.js", "static/style.css"):
        assert asset in page.text
        assert httpx.get(f"{served.url}/{asset}").status_code == 200
    assert "/" not in httpx.get(served.url + "/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("method", "route", "body", "status"),
    [
        ("post", "/search", {"texts": ["x"], "k": 0}, 422),
        ("post", "/search", {"texts": ["x"], "surprise": 1}, 422),
        ("post", "/search", {"k": 3}, 400),
        ("post", "/search", {"texts": [""]}, 400),
        ("post", "/search", {"texts": ["x"], "radius": 65}, 400),
        ("post", "/search", {"embeddings": [[0.1, 0.2]]}, 400),
        ("post", "/search", {"texts": "not a list"}, 422),
        ("post", "/neighbourhood", {"texts": ["x"], "radius": 65}, 400),
        ("post", "/neighbourhood", {"texts": ["x"], "radius": -1}, 422),
        ("post", "/neighbourhood", {"radius": 3}, 400),
        ("post", "/documents", {"documents": [{"id": "a"}]}, 400),
        ("post", "/documents", {"documents": []}, 422),
    ],
)
def test_bad_requests_get_json_errors(served, method, route, body, status):
    response = httpx.request(method, served.url + route, json=body, timeout=60)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    assert httpx.get(served.url + "/health").json()["documents"] == 160


def test_bad_json_and_oversized_bodies(served):
    bad = httpx.post(
        served.url + "/search", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 422
    big = httpx.post(
        served.url + "/search",
        content=b" " * (MAX_BODY_BYTES + 1),
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413 and "error" in big.json()


def test_api_key_guards_every_route_but_health(index_copy):
    server = LoopbackServer(index_copy, api_key="s3cret")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/stats").status_code == 401
            assert client.get("/stats", headers={"x-api-key": "wrong"}).status_code == 401
            assert client.get("/stats", headers={"x-api-key": "s3cret"}).status_code == 200
            auth = {"authorization": "Bearer s3cret"}
            assert client.post("/search", json={"texts": ["x"]}, headers=auth).status_code == 200
            assert client.delete("/documents/travel-01").status_code == 401
    finally:
        server.stop()


def test_concurrent_searches_during_writes_and_restart(index_copy):
    server = LoopbackServer(index_copy)
    errors, stale = [], []
    added = [
        {
            "id": f"live-{i}",
            "text": f"Volcanic eruption number {i} on a remote island.",
            "topic": "live",
        }
        for i in range(6)
    ]

    def searcher():
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for _ in range(15):
                response = client.post("/search", json={"texts": ["gardening tips"], "k": 5})
                if response.status_code != 200:
                    errors.append(response.text)
                elif len(response.json()["results"][0]) != 5:
                    stale.append(response.json())

    try:
        with ThreadPoolExecutor(4) as pool:
            searches = [pool.submit(searcher) for _ in range(3)]
            with httpx.Client(base_url=server.url, timeout=120) as client:
                for doc in added:
                    assert client.post("/documents", json={"documents": [doc]}).status_code == 200
                assert client.delete("/documents/live-0").status_code == 200
                assert client.delete("/documents/gardening-01").status_code == 200
            for future in searches:
                future.result()
        assert not errors and not stale
    finally:
        server.stop()
    restarted = LoopbackServer(index_copy)
    try:
        with httpx.Client(base_url=restarted.url, timeout=60) as client:
            assert client.get("/health").json()["documents"] == 160 + 6 - 2
            assert client.get("/documents/live-5").status_code == 200
            assert client.get("/documents/live-0").status_code == 404
            assert client.get("/documents/gardening-01").status_code == 404
    finally:
        restarted.stop()
