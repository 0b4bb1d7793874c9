"""Schemathesis against the service's own OpenAPI schema, and hypothesis against /search:
no generated request, valid or not, may cause a server error."""

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from retrieval.server import create_app

QUICK = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def app(sample_index, tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "idx"
    shutil.copytree(sample_index.path, path)
    return create_app(path)


def test_no_route_fails_on_generated_requests(app):
    # Driven by hand: schemathesis's pytest plugin does not load under this pytest.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/search", "/documents", "/documents/{doc_id}"}
    for operation in operations:

        @QUICK
        @given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(checks=[not_a_server_error])

        check()


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)


@QUICK
@given(
    body=st.dictionaries(
        st.sampled_from(["texts", "embeddings", "k", "radius", "rescore", "where", "other"]),
        json_scalars
        | st.lists(json_scalars, max_size=3)
        | st.dictionaries(st.text(max_size=5), json_scalars, max_size=2),
        max_size=5,
    )
)
def test_search_answers_any_body_with_a_json_status_below_500(app, body):
    with TestClient(app) as client:
        response = client.post("/search", json=body)
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
