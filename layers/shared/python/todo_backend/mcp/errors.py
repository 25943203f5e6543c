"""The MCP endpoint's errors as small JSON-RPC error objects that echo nothing of the request.

The SDK's transport answers some errors in plain text ("Invalid Origin header", 413, 421), and
others with a message built from the request: a batch array gets pydantic's validation text with
the input in it, an unknown method its name. Rather than fork the transport, this ASGI wrapper
rewrites what leaves `/mcp`:

- an HTTP error status (but 401, whose body and challenge are the app's own) becomes a JSON-RPC
  error with `id: null`, a code for its kind and a fixed message, whoever answered it (the SDK, the
  app's body limit, FastAPI's 405, an unexpected 500);
- a JSON-RPC error inside a 200 keeps its code and the request's id (an integer or a short string,
  as JSON-RPC requires the id back) and gets the code's standard message, without `data`.

Headers are kept (CORS, `Allow`, `Retry-After`) but the body's length and type.
"""

import json
import re
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from todo_backend.core.observability import logger

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000

STANDARD_MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
}

# HTTP status -> (JSON-RPC code, message) for the errors answered before JSON-RPC dispatch.
HTTP_ERRORS: dict[int, tuple[int, str]] = {
    400: (INVALID_REQUEST, "Invalid Request: one JSON-RPC message per POST, as a JSON object"),
    403: (INVALID_REQUEST, "Origin not allowed"),
    404: (INVALID_REQUEST, "Not found"),
    405: (INVALID_REQUEST, "Method not allowed: POST a JSON-RPC message"),
    406: (INVALID_REQUEST, "Not Acceptable: Accept must include application/json"),
    413: (INVALID_REQUEST, "Request body too large"),
    415: (INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json"),
    421: (INVALID_REQUEST, "Host not allowed"),
    429: (SERVER_ERROR, "Too many requests, try again later"),
    503: (SERVER_ERROR, "Service unavailable, try again"),
}
# Ids sent back in errors: JSON-RPC wants the request's own, but not an arbitrary string of it.
ID_MAX_CHARS = 64
# What is kept of an error body to be rewritten: its code is at the start.
ERROR_HEAD_BYTES = 256


def http_error(status: int, head: bytes = b"") -> dict[str, Any]:
    """The JSON-RPC error body of an HTTP error status (`head`: the start of the answer's body)."""
    if status == 400 and _sdk_code(head) == PARSE_ERROR:
        code, message = PARSE_ERROR, "Parse error: the body is not JSON"
    elif status == 400 and head.startswith(b"Invalid Content-Type"):
        code, message = HTTP_ERRORS[415]
    elif status >= 500 and status not in HTTP_ERRORS:
        code, message = INTERNAL_ERROR, "Internal error"
    else:
        code, message = HTTP_ERRORS.get(status, (INVALID_REQUEST, "Invalid Request"))
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}


def _safe_id(value: object) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) <= ID_MAX_CHARS:
        return value
    return None


def rpc_error(answer: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC error answer with its code and the code's standard message, nothing else."""
    error = answer.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        code = INTERNAL_ERROR
    message = STANDARD_MESSAGES.get(code, "Request failed")
    return {
        "jsonrpc": "2.0",
        "id": _safe_id(answer.get("id")),
        "error": {"code": code, "message": message},
    }


_CODE = re.compile(rb'"error"\s*:\s*\{\s*"code"\s*:\s*(-?\d{1,6})')


def _sdk_code(head: bytes) -> int | None:
    """The JSON-RPC code at the start of the SDK's error body (its message may be long)."""
    found = _CODE.search(head)
    return int(found.group(1)) if found else None


def _rewritten_error(body: bytes) -> bytes | None:
    """The sanitized body of a 200 JSON-RPC error answer; None when `body` is not one."""
    if b'"error"' not in body:
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict) or "error" not in answer or "result" in answer:
        return None
    return _dumps(rpc_error(answer))


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _headers_for(headers: list[tuple[bytes, bytes]], body: bytes) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() not in {b"content-length", b"content-type"}]
    return [
        *kept,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]


class JsonRpcErrors:
    """Wraps the MCP function's app: errors leaving `path` become small JSON-RPC errors."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        buffered = bytearray()
        passing = False

        async def rewrite(message: Message) -> None:
            nonlocal start, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                # 401 keeps the app's body and challenge; a success other than JSON (202) and a
                # stream are not errors.
                if status == 401 or (
                    status < 400 and not content_type.startswith(b"application/json")
                ):
                    passing = True
                    await send(message)
                    return
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            buffered.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            status = start["status"]
            headers = list(start.get("headers", ()))
            if status >= 400:
                body = _dumps(http_error(status, bytes(buffered)))
            else:
                body = _rewritten_error(bytes(buffered)) or bytes(buffered)
            await send({**start, "headers": _headers_for(headers, body)})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        try:
            await self.app(scope, receive, rewrite)
        except Exception:
            # What the app's own 500 handler would log; its answer would not be JSON-RPC.
            if start is not None or passing:
                raise
            logger.exception("unhandled error")
            body = _dumps(http_error(500))
            headers = _headers_for([], body)
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})


LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def with_json_rpc_oversized(handler: LambdaHandler, path: str) -> LambdaHandler:
    """The Lambda handler, whose 413 for an event body over the app's limit (answered before the
    app runs, see `core.observability.instrumented`) is a JSON-RPC error at `path` too."""

    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        response = handler(event, context)
        if response.get("statusCode") == 413 and event.get("rawPath") == path:
            body = _dumps(http_error(413)).decode()
            response = {**response, "headers": {"content-type": "application/json"}, "body": body}
        return response

    return lambda_handler
