"""Domain errors, and the one place that turns them into HTTP responses."""

import json
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


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


class ServiceUnavailableError(DomainError):
    status_code = 503


class UpstreamError(DomainError):
    """The model provider failed; `status_code` says how (429, 502, 504)."""

    def __init__(self, detail: str, status_code: int, retry_after: str | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.headers = {"Retry-After": retry_after} if retry_after else None


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a 422 echoes the input, which may hold a lone surrogate that
    UTF-8 cannot encode (FastAPI's own handler would fail with a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to their status codes; anything unexpected is a bare 500."""
    from todo_backend.core.db import DatabaseUnavailableError
    from todo_backend.core.observability import logger

    async def domain_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, DomainError)
        return JSONResponse(
            {"detail": error.detail}, status_code=error.status_code, headers=error.headers
        )

    async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
        logger.warning("database unavailable", extra={"error": str(error)})
        return JSONResponse(
            {"detail": "Database unavailable, try again shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse({"detail": "Internal server error"}, status_code=500)

    async def invalid_request(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return AsciiJSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(DatabaseUnavailableError, database_unavailable)
    app.add_exception_handler(Exception, unexpected)
