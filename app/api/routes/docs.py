"""``/docs`` (Swagger UI) and ``/redoc`` served with their own JavaScript and CSS.

FastAPI's default pages load these from a CDN, so they are blank without internet access. The
files come from the ``fastapi-offline`` package (a dependency of the ``serve`` extra); only the
static files are used, the routes are ours so the pages keep the app's title and root path.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(str(files("fastapi_offline") / "static"))
ASSET_PREFIX = "/docs/static/"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
# Open like /docs itself when API keys are set (the middleware reads this set).
ASSET_PATHS = frozenset(ASSET_PREFIX + name for name in ASSETS) | {"/docs/oauth2-redirect"}

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    """The path prefix the app is mounted under (behind a proxy), as FastAPI's own pages use."""
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root, app = _root(request), request.app
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}{ASSET_PREFIX}swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSET_PREFIX}swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSET_PREFIX}favicon.png",
        swagger_ui_parameters=app.swagger_ui_parameters,
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root, app = _root(request), request.app
    return get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSET_PREFIX}redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSET_PREFIX}favicon.png",
        with_google_fonts=False,
    )


@router.get(ASSET_PREFIX + "{name}")
async def asset(name: str) -> FileResponse:
    """One of the fixed files above (a name outside the table is a 404, never a path walk)."""
    if name not in ASSETS:
        raise HTTPException(404, f"no documentation asset {name!r}")
    return FileResponse(
        STATIC_DIR / name,
        media_type=ASSETS[name],
        headers={"cache-control": "public, max-age=86400"},
    )
