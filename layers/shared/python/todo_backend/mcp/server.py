"""The task tools as an MCP server: Streamable HTTP, stateless, JSON responses (official SDK).

The tools are `todo_backend.tasks.tools.TOOLS`, the chat assistant's own: same names, descriptions,
JSON schemas and execution, each acting only for the authenticated user (no tool takes a user id),
with their title, annotations and output schema from the same registry. A tool's failure is a
tool result with `isError: true` (text only), which the calling model can read; so is a call that
the token's scopes do not allow (nothing runs).

Lambda: the SDK's session manager runs a task group that belongs to one event loop and can be
started only once. Mangum may run each invocation in a new loop, so a manager started once per
process fails on a later warm call. A manager is cheap (the `Server` with its handlers is built
once): each request gets its own, started and stopped inside that request.
"""

import json
from collections.abc import Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from todo_backend.core.auth import Principal
from todo_backend.core.db import get_database
from todo_backend.core.errors import DomainError
from todo_backend.core.settings import Settings, is_local_host
from todo_backend.tasks.tools import SCOPES, TOOLS, ToolContext, execute_tool

SERVER_NAME = "todo-tasks"
RESOURCE_NAME = "Todo tasks"
INSTRUCTIONS = (
    "Manage the signed-in user's tasks: add, list, complete, update and delete them. "
    "Call list_tasks to find a task's id before changing it."
)
# A JSON-RPC request for one tool call is a few KB; anything far larger is refused with 413.
MAX_REQUEST_BODY_BYTES = 64 * 1024
# Where the authenticated principal is kept in the ASGI scope for the tool handlers.
USER_SCOPE_KEY = "todo_backend.user"

# DNS-rebinding protection (Host and Origin checks) for local use; a request through API Gateway
# adds the API's own host, which API Gateway itself puts in the event.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
LOCAL_ALLOWED_HOSTS = [*LOCAL_HOSTS, *(f"{host}:*" for host in LOCAL_HOSTS)]
LOCAL_ALLOWED_ORIGINS = [f"http://{host}{port}" for host in LOCAL_HOSTS for port in ("", ":*")]


def _principal_of(context: ServerRequestContext[Any, Any]) -> Principal | None:
    request = context.request
    if not isinstance(request, Request):
        return None
    principal = request.scope.get(USER_SCOPE_KEY)
    return principal if isinstance(principal, Principal) else None


@cache
def tool_definitions() -> list[types.Tool]:
    """Every tool of the registry as an MCP tool (tools added there appear here)."""
    return [
        types.Tool(
            name=tool.name,
            title=tool.title,
            description=tool.description,
            input_schema=tool.input_schema,
            output_schema=tool.output_schema,
            annotations=types.ToolAnnotations(
                title=tool.title,
                read_only_hint=not tool.changes_tasks,
                destructive_hint=tool.destructive,
                idempotent_hint=tool.idempotent,
                # Every tool acts on this API's own task list, nothing outside it.
                open_world_hint=False,
            ),
        )
        for tool in TOOLS.values()
    ]


def tool_result(result: Mapping[str, Any]) -> types.CallToolResult:
    """A tool's JSON result as MCP content: text for every client, and, for a success, the
    same as structured content (it conforms to the tool's output schema; an error does not)."""
    text = [types.TextContent(type="text", text=json.dumps(result, ensure_ascii=False))]
    if "error" in result:
        return types.CallToolResult(content=text, is_error=True)
    return types.CallToolResult(content=text, structured_content=dict(result), is_error=False)


def scope_error(name: str, principal: Principal) -> dict[str, Any] | None:
    """The tool error for a call the token's scopes do not allow (None: allowed)."""
    tool = TOOLS.get(name)
    if tool is None or principal.allows(tool.scope):
        return None
    return {"error": f"this token lacks the {tool.scope} scope that {tool.name} needs"}


async def _list_tools(
    context: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=tool_definitions())


async def _call_tool(
    context: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    principal = _principal_of(context)
    if principal is None:
        # Unreachable through the app (it authenticates first); refuse rather than guess.
        return tool_result({"error": "not authenticated"})
    refused = scope_error(params.name, principal)
    if refused is not None:
        return tool_result(refused)
    arguments = params.arguments if params.arguments is not None else {}
    # Like the task routes: a Lambda container serves one request at a time, so the short
    # database calls run inline, without a worker-thread hop.
    context_ = ToolContext(get_database(), principal.subject)
    return tool_result(execute_tool(context_, params.name, arguments))


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


def front_end_origins(settings: Settings) -> list[str]:
    """The browser origins whose pages may call /mcp: `CORS_ORIGINS` (the local app's CORS) and
    `ALLOWED_ORIGINS` (the stack's AllowedOrigins, whose CORS API Gateway answers)."""
    return [*settings.cors_origins, *settings.allowed_origins]


def _request_origin(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            return value.decode("latin-1")
    return None


def transport_security(
    scope: Scope, extra_origins: list[str], public_url: str | None = None
) -> TransportSecuritySettings:
    """Host and Origin checks: the local names, the public origin, the API Gateway host of this
    invocation, and the front ends' origins (`*` among them: any origin, as CORS allows).

    Deployed (a non-local API Gateway host), a page on a local origin is a front end like any
    other: admitted only when the stack allows it (AllowedOrigins), as CORS does."""
    domain = api_gateway_host(scope)
    deployed = domain is not None and not is_local_host(urlsplit(f"//{domain}").hostname)
    hosts = list(LOCAL_ALLOWED_HOSTS)
    origins = [] if deployed else list(LOCAL_ALLOWED_ORIGINS)
    origins += [origin.rstrip("/") for origin in extra_origins if origin != "*"]
    if "*" in extra_origins and (origin := _request_origin(scope)) is not None:
        origins.append(origin)
    if public_url is not None:
        hosts.append(urlsplit(public_url).netloc)
        origins.append(public_url)
    if domain is not None:
        hosts.append(domain)
        origins.append(f"https://{domain}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


async def serve(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    principal: Principal,
    extra_origins: list[str],
    public_url: str | None = None,
) -> None:
    """Answer one MCP request (already authenticated) with its own session manager."""
    scope[USER_SCOPE_KEY] = principal
    manager = StreamableHTTPSessionManager(
        app=mcp_server(),
        json_response=True,
        stateless=True,
        security_settings=transport_security(scope, extra_origins, public_url),
        max_request_body_size=MAX_REQUEST_BODY_BYTES,
    )
    async with manager.run():
        await manager.handle_request(scope, receive, send)


# --- OAuth protected resource (RFC 9728) -------------------------------------------------------

MCP_PATH = "/mcp"
# RFC 9728 section 3.1: the metadata of `<origin>/mcp` is at this path plus `/mcp`; clients that
# predate it read the root, which says the same.
METADATA_ROOT_PATH = "/.well-known/oauth-protected-resource"
METADATA_PATH = METADATA_ROOT_PATH + MCP_PATH


class HostNotAllowedError(DomainError):
    """A Host that is not this API's: no metadata or challenge names it (DNS rebinding)."""

    status_code = 421


def origin_of(request: Request, public_url: str | None = None) -> str:
    """This API's origin: `PUBLIC_URL` when set, else https plus API Gateway's host under Lambda,
    else (locally) the request's own, from a local Host only."""
    if public_url is not None:
        return public_url
    domain = api_gateway_host(request.scope)
    if domain is not None:
        return f"https://{domain}"
    if not is_local_host(request.url.hostname):
        raise HostNotAllowedError("Invalid Host header")
    return f"{request.url.scheme}://{request.url.netloc}"


def mcp_resource(origin: str) -> str:
    """The MCP resource's identifier (RFC 8707), the `aud` of its OAuth access tokens."""
    return f"{origin}{MCP_PATH}"


def protected_resource_metadata(origin: str, authorization_server: str | None) -> dict[str, Any]:
    """Where a client gets tokens for `<origin>/mcp` (no authorization server: none advertised)."""
    metadata: dict[str, Any] = {"resource": mcp_resource(origin)}
    if authorization_server is not None:
        metadata["authorization_servers"] = [authorization_server]
    metadata["bearer_methods_supported"] = ["header"]
    metadata["scopes_supported"] = list(SCOPES)
    metadata["resource_name"] = RESOURCE_NAME
    return metadata


def bearer_challenge(origin: str) -> str:
    """The `WWW-Authenticate` value of a 401 on /mcp: where the resource metadata is, and the
    scopes a client should ask for."""
    return f'Bearer resource_metadata="{origin}{METADATA_PATH}", scope="{" ".join(SCOPES)}"'
