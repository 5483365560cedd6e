"""/docs and /redoc work without internet: their pages load JavaScript and CSS only from the app."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS


@pytest.fixture(scope="module")
def client() -> TestClient:
    # No lifespan: documentation pages need no models. API keys on, as in production.
    return TestClient(create_app(Settings(models_dir=MODELS, api_keys=["k1"])))


def assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize(("page", "needs"), [("/docs", 3), ("/redoc", 2)])
def test_docs_pages_reference_only_local_assets(client: TestClient, page: str, needs: int) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = assets(r.text)
    assert len(urls) >= needs, urls
    assert "http" not in r.text.replace("http-equiv", ""), "a page must not name any host"
    for url in urls:
        assert url.startswith("/docs/static/"), url
        asset = client.get(url)  # open without a key, like the pages themselves
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000
    assert "/openapi.json" in r.text and client.get("/openapi.json").status_code == 200


def test_swagger_and_redoc_bundles_have_the_right_types(client: TestClient) -> None:
    for name, kind in [
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "javascript"),
    ]:
        assert kind in client.get(f"/docs/static/{name}").headers["content-type"]


def test_only_the_known_assets_are_served(client: TestClient) -> None:
    for path in ("/docs/static/core.py", "/docs/static/..%2F__init__.py", "/docs/static/x"):
        assert client.get(path).status_code == 401  # not an open path without a key
        assert client.get(path, headers={"X-API-Key": "k1"}).status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 200


def test_docs_routes_stay_out_of_the_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
