"""Lambda function `mcp`: the task tools over the Model Context Protocol. Routing only; the server
is `todo_backend.mcp.server` in the shared layer, the `mcp` SDK ships with this function.

POST /mcp is a FastAPI route (so it is documented and authenticated like every other route) whose
response hands the untouched ASGI request to the SDK's Streamable HTTP transport.
"""

import gc

gc.disable()  # while the function initialises; register_snapstart (last) enables it

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from mangum import Mangum
from starlette.types import Receive, Scope, Send

from todo_backend.core.api import ErrorBody, authenticate, bearer, create_app
from todo_backend.core.errors import AuthenticationError, DomainError
from todo_backend.core.observability import instrumented
from todo_backend.core.settings import get_settings
from todo_backend.core.snapstart import register as register_snapstart
from todo_backend.mcp.server import (
    MCP_PATH,
    METADATA_PATH,
    bearer_challenge,
    origin_of,
    protected_resource_metadata,
    serve,
)
from todo_backend.mcp.warmup import warm_mcp_routes

app = create_app(
    "Todo MCP server",
    "The task tools over the Model Context Protocol (Streamable HTTP, stateless, JSON responses).",
)


class ChallengedAuthenticationError(DomainError):
    """401 that tells an MCP client where to learn how to get a token (RFC 9728)."""

    status_code = 401

    def __init__(self, detail: str, origin: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": bearer_challenge(origin)}


async def mcp_user(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    try:
        return authenticate(request.headers.get("authorization"))
    except AuthenticationError as error:
        raise ChallengedAuthenticationError(error.detail, origin_of(request)) from None


class McpExchange(Response):
    """The response of POST /mcp: the SDK's transport reads the request and answers it itself."""

    def __init__(self, user: str) -> None:
        super().__init__()
        self.user = user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve(
            scope,
            receive,
            send,
            user=self.user,
            extra_origins=list(get_settings().cors_origins),
        )


JSON_RPC = {"application/json": {"schema": {"type": "object", "description": "JSON-RPC 2.0"}}}
# What the endpoint accepts: one JSON-RPC 2.0 request (with an `id`) or notification (without).
JSON_RPC_MESSAGE = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": "A JSON-RPC 2.0 request (with `id`) or notification (without)",
            "required": ["jsonrpc", "method"],
            "properties": {
                "jsonrpc": {"type": "string", "enum": ["2.0"]},
                # A string or a number makes a request; without one (or with another value,
                # which the SDK keeps as an extra field) it is a notification.
                "id": {"description": "A string or number: the request's id"},
                "method": {"type": "string"},
                "params": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            },
        }
    }
}


@app.post(
    MCP_PATH,
    summary="MCP Streamable HTTP endpoint",
    description="One JSON-RPC message per POST; the answer is JSON (no SSE, no session).",
    response_class=Response,
    openapi_extra={"requestBody": {"required": True, "content": JSON_RPC_MESSAGE}},
    responses={
        200: {"description": "The JSON-RPC response", "content": JSON_RPC},
        202: {"description": "A notification, accepted"},
        400: {"description": "Not a JSON-RPC message, or not `Content-Type: application/json`"},
        401: {
            "model": ErrorBody,
            "description": "Missing or invalid token; "
            '`WWW-Authenticate: Bearer resource_metadata="…"`',
        },
        403: {"description": "`Origin` not allowed"},
        406: {"description": "`Accept` must include application/json"},
        413: {"description": "Body over 64 KiB"},
        421: {"description": "`Host` not allowed"},
        503: {"model": ErrorBody, "description": "The token's key set could not be fetched"},
    },
)
async def mcp(user: Annotated[str, Depends(mcp_user)]) -> Response:
    return McpExchange(user)


@app.get(METADATA_PATH, summary="OAuth protected resource metadata (RFC 9728)")
async def oauth_protected_resource(request: Request) -> dict[str, Any]:
    server = get_settings().better_auth_url
    return protected_resource_metadata(
        origin_of(request), None if server is None else str(server).rstrip("/")
    )


handler = instrumented(Mangum(app, lifespan="off"))
register_snapstart(app, warm_mcp_routes)
