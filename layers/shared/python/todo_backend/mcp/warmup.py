"""The MCP function's SnapStart warm-up (see `todo_backend.core.snapstart`): the protected
resource metadata, the 401 challenge, then one stateless exchange (initialize, tools/list and a
read-only tools/call of list_tasks) for the synthetic user. Nothing is written.

The SDK checks Host and Origin (DNS-rebinding protection): the warm-up events carry API Gateway's
`requestContext.domainName`, which `mcp.server.transport_security` allows, and the same Host.
"""

from typing import Any

from todo_backend.core.snapstart import WarmUpClient, WarmUpError
from todo_backend.mcp.server import MCP_PATH, METADATA_PATH

PROTOCOL_VERSION = "2025-11-25"
ACCEPT = {"accept": "application/json, text/event-stream"}


def _rpc(method: str, request_id: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def _exchange(client: WarmUpClient, body: dict[str, Any], headers: dict[str, str]) -> Any:
    """The JSON-RPC result; anything else (a 421 from the Host check, a JSON-RPC error, a tool
    error) raises `WarmUpError`: the warm-up would otherwise miss the paths it is for."""
    status, answer = client.request("POST", MCP_PATH, body=body, headers=headers)
    if status != 200 or not isinstance(answer, dict) or "result" not in answer:
        raise WarmUpError(f"MCP {body['method']} answered {status}: {str(answer)[:200]}")
    result = answer["result"]
    if isinstance(result, dict) and result.get("isError"):
        raise WarmUpError(f"MCP {body['method']} answered a tool error: {str(result)[:200]}")
    return result


def warm_mcp_routes(client: WarmUpClient) -> None:
    client.request("GET", METADATA_PATH, authenticated=False)
    client.request("POST", MCP_PATH, body=_rpc("tools/list", 1), authenticated=False)  # 401
    initialize = {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "snapstart-warm-up", "version": "1"},
    }
    _exchange(client, _rpc("initialize", 1, initialize), ACCEPT)
    versioned = {**ACCEPT, "mcp-protocol-version": PROTOCOL_VERSION}
    _exchange(client, _rpc("tools/list", 2), versioned)
    call = {"name": "list_tasks", "arguments": {"status": "pending"}}
    _exchange(client, _rpc("tools/call", 3, call), versioned)
