"""Every HTTP function behind one ASGI app, routed by path as API Gateway routes them, plus the
whole API's OpenAPI document at /openapi.json and Swagger UI at /docs, whose script, style and icon
are served from /docs/assets/ out of the fastapi-offline package (no CDN: the page works offline).

The functions are those of scripts/functions.py. A request goes to the first function with a route
matching its path and method; failing that, to the first whose path matches (it answers 405, or a
CORS preflight); failing that, to the first function (404).
"""

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.routing import Match

from scripts.functions import HttpFunction, load_http_functions
from scripts.openapi import TITLE, merge_schemas

FUNCTIONS: list[HttpFunction] = load_http_functions()

docs = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
_document: dict[str, Any] | None = None


@docs.get("/openapi.json", include_in_schema=False)
async def openapi_document() -> JSONResponse:
    global _document
    if _document is None:
        _document = merge_schemas([(f.name, f.app.openapi()) for f in FUNCTIONS])
    return JSONResponse(_document)


DOCS_ASSETS_PATH = "/docs/assets"
# The files of Swagger UI that the page loads, with their media types.
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


@cache
def _assets_directory() -> Path:
    """Where fastapi-offline keeps Swagger UI: found when /docs is first asked for, not imported."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise HTTPException(status_code=404, detail="fastapi-offline is not installed")
    return Path(spec.origin).parent / "static"


@docs.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} (local)",
        swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS_PATH}/favicon.png",
    )


@docs.get(DOCS_ASSETS_PATH + "/{name}", include_in_schema=False)
async def swagger_ui_asset(name: str) -> FileResponse:
    if name not in DOCS_ASSETS:
        raise HTTPException(status_code=404, detail="Not Found")
    return FileResponse(_assets_directory() / name, media_type=DOCS_ASSETS[name])


DOCS_PATHS = {"/openapi.json", "/docs"}


def choose(scope: dict[str, Any]) -> Any:
    path = scope.get("path", "")
    if scope["type"] == "http" and (path in DOCS_PATHS or path.startswith(DOCS_ASSETS_PATH + "/")):
        return docs
    if scope["type"] not in ("http", "websocket"):
        return FUNCTIONS[0].app
    partial = None
    for function in FUNCTIONS:
        for route in function.app.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return function.app
            if match is Match.PARTIAL and partial is None:
                partial = function.app
    return partial or FUNCTIONS[0].app


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await docs(scope, receive, send)
        return
    await choose(scope)(scope, receive, send)
