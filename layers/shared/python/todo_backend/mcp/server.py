"""The task tools as an MCP server: Streamable HTTP, stateless, JSON responses (official SDK).

The tools are `todo_backend.tasks.tools.TOOLS`, the chat assistant's own: same names, descriptions,
JSON schemas and execution, each acting only for the authenticated user (no tool takes a user id).
A tool's failure is a tool result with `isError: true`, which the calling model can read.

Lambda: the SDK's session manager runs a task group that belongs to one event loop and can be
started only once. Mangum may run each invocation in a new loop, so a manager started once per
process fails on a later warm call. A manager is cheap (the `Server` with its handlers is built
once): each request gets its own, started and stopped inside that request.
"""

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from todo_backend.core.db import get_database
from todo_backend.tasks.tools import TOOLS, ToolContext, execute_tool

SERVER_NAME = "todo-tasks"
INSTRUCTIONS = (
    "Manage the signed-in user's tasks: add, list, complete, update and delete them. "
    "Call list_tasks to find a task's id before changing it."
)
# A JSON-RPC request for one tool call is a few KB; anything far larger is refused with 413.
MAX_REQUEST_BODY_BYTES = 64 * 1024
# Where the authenticated user is kept in the ASGI scope for the tool handlers.
USER_SCOPE_KEY = "todo_backend.user"

# DNS-rebinding protection (Host and Origin checks) for local use; a request through API Gateway
# adds the API's own host, which API Gateway itself puts in the event.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
LOCAL_ALLOWED_HOSTS = [*LOCAL_HOSTS, *(f"{host}:*" for host in LOCAL_HOSTS)]
LOCAL_ALLOWED_ORIGINS = [f"http://{host}{port}" for host in LOCAL_HOSTS for port in ("", ":*")]


def _user_of(context: ServerRequestContext[Any, Any]) -> str | None:
    request = context.request
    if not isinstance(request, Request):
        return None
    user = request.scope.get(USER_SCOPE_KEY)
    return user if isinstance(user, str) and user else None


def tool_definitions() -> list[types.Tool]:
    """Every tool of the registry as an MCP tool (tools added there appear here)."""
    return [
        types.Tool(
            name=tool.name,
            description=tool.description,
            input_schema=tool.input_schema,
            annotations=types.ToolAnnotations(read_only_hint=not tool.changes_tasks),
        )
        for tool in TOOLS.values()
    ]


def tool_result(result: Mapping[str, Any]) -> types.CallToolResult:
    """A tool's JSON result as MCP content (text for every client, structured for newer ones)."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(result, ensure_ascii=False))],
        structured_content=dict(result),
        is_error="error" in result,
    )


async def _list_tools(
    context: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=tool_definitions())


async def _call_tool(
    context: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    user = _user_of(context)
    if user is None:
        # Unreachable through the app (it authenticates first); refuse rather than guess.
        return tool_result({"error": "not authenticated"})
    arguments = params.arguments if params.arguments is not None else {}
    # Like the task routes: a Lambda container serves one request at a time, so the short
    # database calls run inline, without a worker-thread hop.
    return tool_result(execute_tool(ToolContext(get_database(), user), params.name, arguments))


@cache
def mcp_server() -> Server[Any]:
    """The MCP server and its handlers, built once per process."""
    return Server(
        SERVER_NAME,
        version="1.0.0",
        title="Todo tasks",
        instructions=INSTRUCTIONS,
        on_list_tools=_list_tools,
        on_call_tool=_call_tool,
    )


def api_gateway_host(scope: Scope) -> str | None:
    """The API's host name as API Gateway reports it (`requestContext.domainName`), under Lambda."""
    event = scope.get("aws.event")
    if not isinstance(event, dict):
        return None
    domain = event.get("requestContext", {}).get("domainName")
    return domain if isinstance(domain, str) and domain else None


def transport_security(scope: Scope, extra_origins: list[str]) -> TransportSecuritySettings:
    """Host and Origin checks: the local names, plus the API Gateway host of this invocation."""
    hosts = list(LOCAL_ALLOWED_HOSTS)
    origins = [*LOCAL_ALLOWED_ORIGINS, *extra_origins]
    domain = api_gateway_host(scope)
    if domain is not None:
        hosts.append(domain)
        origins.append(f"https://{domain}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


async def serve(
    scope: Scope, receive: Receive, send: Send, *, user: str, extra_origins: list[str]
) -> None:
    """Answer one MCP request (already authenticated as `user`) with its own session manager."""
    scope[USER_SCOPE_KEY] = user
    manager = StreamableHTTPSessionManager(
        app=mcp_server(),
        json_response=True,
        stateless=True,
        security_settings=transport_security(scope, extra_origins),
        max_request_body_size=MAX_REQUEST_BODY_BYTES,
    )
    async with manager.run():
        await manager.handle_request(scope, receive, send)


# --- OAuth protected resource (RFC 9728) -------------------------------------------------------

METADATA_PATH = "/.well-known/oauth-protected-resource"
MCP_PATH = "/mcp"


def origin_of(request: Request) -> str:
    """This API's origin: https plus API Gateway's host under Lambda, else the request's own."""
    domain = api_gateway_host(request.scope)
    if domain is not None:
        return f"https://{domain}"
    return f"{request.url.scheme}://{request.url.netloc}"


def protected_resource_metadata(origin: str, authorization_server: str | None) -> dict[str, Any]:
    """Where a client gets tokens for `<origin>/mcp` (no authorization server: none advertised)."""
    metadata: dict[str, Any] = {"resource": f"{origin}{MCP_PATH}"}
    if authorization_server is not None:
        metadata["authorization_servers"] = [authorization_server]
    metadata["bearer_methods_supported"] = ["header"]
    return metadata


def bearer_challenge(origin: str) -> str:
    """The `WWW-Authenticate` value of a 401 on /mcp: where the resource metadata is."""
    return f'Bearer resource_metadata="{origin}{METADATA_PATH}"'
