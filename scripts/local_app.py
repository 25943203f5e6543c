"""Every HTTP function behind one ASGI app, routed by path as API Gateway routes them, plus the
whole API's OpenAPI document at /openapi.json and Swagger UI at /docs.

The functions are those of scripts/functions.py. A request goes to the first function with a route
matching its path and method; failing that, to the first whose path matches (it answers 405, or a
CORS preflight); failing that, to the first function (404).
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
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


@docs.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{TITLE} (local)")


DOCS_PATHS = {"/openapi.json", "/docs"}


def choose(scope: dict[str, Any]) -> Any:
    if scope["type"] == "http" and scope.get("path") in DOCS_PATHS:
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
