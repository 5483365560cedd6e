"""Property-based API tests from the service's own OpenAPI schema (schemathesis).

Every operation gets a bounded number of generated requests against the ASGI app on the shipped
models; no response may be a 5xx, and every response (status, content type, body, headers) must
match the documented schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS, TEST_DEADLINE_MS

# no 5xx is the claim: a deadline 503 on a loaded machine is not what this test is about
app = create_app(
    Settings(
        models_dir=MODELS,
        state_secret="schemathesis-0123456789abcdef01234",
        request_deadline_ms=TEST_DEADLINE_MS,
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def _models_loaded() -> Iterator[None]:
    with TestClient(app):  # runs the lifespan: the models load once for the module
        yield


# Moderate in CI; SEQSERVE_SCHEMATHESIS_EXAMPLES=300 (or more) for a deeper run by hand.
EXAMPLES = int(os.environ.get("SEQSERVE_SCHEMATHESIS_EXAMPLES", "40"))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_responses_match_the_schema(case: schemathesis.Case) -> None:
    # Not "positive data acceptance": the schema now says what it can (one of 'text'/'texts',
    # no blank text, the default limits, the temperature's range, freq's form, unique levels),
    # but not what depends on the model served (a forecast series' minimum length and
    # horizon), on the server's secret (a state token's signature) or relates two arrays
    # (anomaly timestamps one per value), so schema-valid bodies may still rightly get a 4xx.
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ]
    )
