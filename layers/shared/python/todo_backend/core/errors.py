"""Domain errors, and the one place that turns them into HTTP responses."""

import json
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from todo_backend.core.limits import MAX_ERROR_BODY_BYTES, TOO_LARGE_DETAIL

# What a 422 keeps of each error: inputs and locations are echoed only while they are small.
MAX_ERRORS_SHOWN = 20
MAX_ECHO_CHARS = 200
MAX_LOCATION_PART_CHARS = 100
MAX_MESSAGE_CHARS = 500


class DomainError(Exception):
    """Base of the errors that the service reports to clients; `detail` is safe to show."""

    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AuthenticationError(DomainError):
    status_code = 401
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class PermissionDeniedError(DomainError):
    status_code = 403


class NotFoundError(DomainError):
    status_code = 404


class InvalidInputError(DomainError):
    """A 422 found by the service, not by the schema; rendered as FastAPI's list of errors."""

    status_code = 422

    def __init__(self, detail: str, *, loc: tuple[str, ...], error_type: str) -> None:
        super().__init__(detail)
        self.loc = loc
        self.error_type = error_type

    def errors(self) -> list[dict[str, Any]]:
        return [{"type": self.error_type, "loc": list(self.loc), "msg": self.detail}]


class UnsupportedMediaTypeError(DomainError):
    status_code = 415


# The 415 of a body sent as anything but JSON (a form, text, ...).
JSON_EXPECTED_DETAIL = "The request body must be JSON, sent with Content-Type: application/json"


class ServiceUnavailableError(DomainError):
    status_code = 503


class UpstreamError(DomainError):
    """The model provider failed; `status_code` says how (429, 502, 504)."""

    def __init__(self, detail: str, status_code: int, retry_after: str | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.headers = {"Retry-After": retry_after} if retry_after else None


# The 503 of a write whose connection broke mid-statement: it may have committed.
WRITE_OUTCOME_UNKNOWN_DETAIL = (
    "The database connection was lost during this change, which may or may not have been"
    " applied. Check before repeating it, or repeat it with the same Idempotency-Key."
)


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a 422 echoes the input, which may hold a lone surrogate that
    UTF-8 cannot encode (FastAPI's own handler would fail with a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _size_within(value: Any, budget: int) -> int:
    """The rough JSON size of `value`, counted only until it exceeds `budget` (so a huge input
    costs no more than a small one)."""
    stack = [value]
    size = 0
    while stack and size <= budget:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            size += len(item) + 2
        elif isinstance(item, dict):
            size += 2 + len(item)
            for key, nested in item.items():
                stack.append(key)
                stack.append(nested)
                if len(stack) > budget:
                    return budget + 1
        elif isinstance(item, (list, tuple, set, frozenset)):
            size += 2 + len(item)
            if len(item) > budget:
                return budget + 1
            stack.extend(item)
        else:
            size += 8
    return size


def _small(value: Any) -> bool:
    """Whether `value` is short enough to echo back in an error."""
    if _size_within(value, MAX_ECHO_CHARS) > MAX_ECHO_CHARS:
        return False
    try:
        return len(json.dumps(jsonable_encoder(value), ensure_ascii=True)) <= MAX_ECHO_CHARS
    except (TypeError, ValueError):
        return False


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded_error(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error without large echoes: `input` and `ctx` only when small, locations
    and messages clipped."""
    bounded: dict[str, Any] = {
        "type": error.get("type"),
        "loc": [
            _clip(part, MAX_LOCATION_PART_CHARS) if isinstance(part, str) else part
            for part in error.get("loc", ())
        ],
        "msg": _clip(str(error.get("msg", "")), MAX_MESSAGE_CHARS),
    }
    if "input" in error and _small(error["input"]):
        bounded["input"] = error["input"]
    if "ctx" in error and _small(error["ctx"]):
        bounded["ctx"] = error["ctx"]
    return bounded


def bounded_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's list of validation errors, at most `MAX_ERROR_BODY_BYTES` once rendered: the
    first errors in full (inputs echoed only when small), then one entry counting the rest."""
    shown: list[dict[str, Any]] = []
    size = 2
    total = len(errors)
    for error in errors[:MAX_ERRORS_SHOWN]:
        item = jsonable_encoder(_bounded_error(error))
        item_size = len(json.dumps(item, ensure_ascii=True, separators=(",", ":"))) + 1
        # Keep room for the closing summary entry.
        if size + item_size > MAX_ERROR_BODY_BYTES - 256:
            break
        shown.append(item)
        size += item_size
    if len(shown) < total:
        shown.append(
            {
                "type": "too_many_errors",
                "loc": [],
                "msg": f"{total - len(shown)} more errors not shown",
            }
        )
    return shown


def allowed_methods(request: Request) -> str:
    """The methods of every route of the app that serves the request's path, for `Allow`."""
    path = request.scope.get("route_path") or request.url.path
    methods: set[str] = set()
    for route in request.app.router.routes:
        path_regex = getattr(route, "path_regex", None)
        if path_regex is not None and path_regex.match(path):
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to their status codes; anything unexpected is a bare 500."""
    from todo_backend.core.db import DatabaseUnavailableError, WriteOutcomeUnknownError
    from todo_backend.core.observability import logger

    async def domain_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, DomainError)
        detail = error.errors() if isinstance(error, InvalidInputError) else error.detail
        return JSONResponse(
            {"detail": detail}, status_code=error.status_code, headers=error.headers
        )

    async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
        logger.warning("database unavailable", extra={"error": str(error)})
        detail = (
            WRITE_OUTCOME_UNKNOWN_DETAIL
            if isinstance(error, WriteOutcomeUnknownError)
            else "Database unavailable, try again shortly"
        )
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse({"detail": "Internal server error"}, status_code=500)

    async def invalid_request(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        detail = bounded_validation_errors(error.errors())
        return AsciiJSONResponse({"detail": detail}, status_code=422)

    async def http_error(request: Request, error: Exception) -> Any:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code == 413:
            return JSONResponse({"detail": TOO_LARGE_DETAIL}, status_code=413)
        if error.status_code == 405:
            # Starlette's Allow names the methods of the one route it tried; a path is often
            # served by several (GET and POST /api/tasks).
            error.headers = {**(error.headers or {}), "Allow": allowed_methods(request)}
        return await http_exception_handler(request, error)

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(DatabaseUnavailableError, database_unavailable)
    app.add_exception_handler(Exception, unexpected)
