"""Lambda function `mcp`: the task tools over the Model Context Protocol. Routing only; the server
is `todo_backend.mcp.server` in the shared layer, the `mcp` SDK ships with this function.

POST /mcp is a FastAPI route (so it is documented and authenticated like every other route) whose
response hands the untouched ASGI request to the SDK's Streamable HTTP transport. It accepts
session tokens and OAuth access tokens issued for this resource (`todo_backend.core.auth`); every
error it answers but the 401 is a small JSON-RPC error (`todo_backend.mcp.errors`).
"""

import gc

gc.disable()  # while the function initialises; register_snapstart (last) enables it

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from mangum import Mangum
from starlette.types import Receive, Scope, Send

from todo_backend.core.api import ErrorBody, authorize, bearer, create_app
from todo_backend.core.auth import Principal, RouteAudience, oauth_issuer
from todo_backend.core.errors import AuthenticationError, DomainError
from todo_backend.core.observability import instrumented
from todo_backend.core.settings import get_settings
from todo_backend.core.snapstart import register as register_snapstart
from todo_backend.mcp.errors import JsonRpcErrors, with_json_rpc_oversized
from todo_backend.mcp.server import (
    MCP_PATH,
    METADATA_PATH,
    METADATA_ROOT_PATH,
    bearer_challenge,
    front_end_origins,
    mcp_resource,
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


async def mcp_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The token's subject and scopes: a session token, or an OAuth access token for this
    resource (`<origin>/mcp`); 401 with the challenge otherwise."""
    origin = origin_of(request, get_settings().public_url)
    route = RouteAudience(mcp_resource=mcp_resource(origin))
    try:
        return authorize(request.headers.get("authorization"), route)
    except AuthenticationError as error:
        raise ChallengedAuthenticationError(error.detail, origin) from None


class McpExchange(Response):
    """The response of POST /mcp: the SDK's transport reads the request and answers it itself."""

    def __init__(self, principal: Principal) -> None:
        super().__init__()
        self.principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = get_settings()
        await serve(
            scope,
            receive,
            send,
            principal=self.principal,
            extra_origins=front_end_origins(settings),
            public_url=settings.public_url,
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
        400: {
            "description": "Not one JSON-RPC message (a batch array: -32600), or not "
            "`Content-Type: application/json`",
            "content": JSON_RPC,
        },
        401: {
            "model": ErrorBody,
            "description": "Missing or invalid token, or one issued for another resource; "
            '`WWW-Authenticate: Bearer resource_metadata="…", scope="…"`',
        },
        403: {"description": "`Origin` not allowed", "content": JSON_RPC},
        406: {"description": "`Accept` must include application/json", "content": JSON_RPC},
        413: {"description": "Body over 64 KiB", "content": JSON_RPC},
        421: {"description": "`Host` not allowed", "content": JSON_RPC},
        503: {"description": "The token's key set could not be fetched", "content": JSON_RPC},
    },
)
async def mcp(principal: Annotated[Principal, Depends(mcp_principal)]) -> Response:
    return McpExchange(principal)


async def oauth_protected_resource(request: Request) -> dict[str, Any]:
    settings = get_settings()
    return protected_resource_metadata(
        origin_of(request, settings.public_url), oauth_issuer(settings)
    )


for path, operation in (
    (METADATA_PATH, "oauth_protected_resource_mcp"),
    (METADATA_ROOT_PATH, "oauth_protected_resource"),
):
    app.get(
        path,
        operation_id=operation,
        summary="OAuth protected resource metadata (RFC 9728) of /mcp",
        description="Also served at the root (`/.well-known/oauth-protected-resource`) for "
        "clients that look there.",
        responses={421: {"model": ErrorBody, "description": "`Host` not allowed"}},
    )(oauth_protected_resource)


# Outermost: it sees what the body limit, CORS and the SDK answer at /mcp.
app.add_middleware(JsonRpcErrors, path=MCP_PATH)

handler = with_json_rpc_oversized(instrumented(Mangum(app, lifespan="off")), MCP_PATH)
register_snapstart(app, warm_mcp_routes)
