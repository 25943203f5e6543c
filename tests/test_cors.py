"""Browser clients: one list of CORS headers for the local app and API Gateway, and the MCP
function's Origin check admitting the front ends' origins (API.md, third wave, "Browser MCP
clients")."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.lambda_events import LambdaClient
from tests.support.tokens import make_token, new_user_id
from tests.test_deployment import load_cfn_yaml

ROOT = Path(__file__).resolve().parents[1]
MCP_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-11-25",
}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def template_cors() -> dict[str, Any]:
    template = load_cfn_yaml(ROOT / "template.yaml")
    body = template["Resources"]["HttpApi"]["Properties"]["DefinitionBody"]
    return body["x-amazon-apigateway-cors"]  # type: ignore[no-any-return]


def lowered(names: Any) -> list[str]:
    return sorted(name.lower() for name in names)


def test_the_local_cors_lists_are_the_templates():
    from todo_backend.core import api

    # Given the lists the local app answers CORS with, and those API Gateway answers it with
    cors = template_cors()
    # Then they are the same lists
    assert lowered(api.CORS_ALLOW_HEADERS) == lowered(cors["allowHeaders"])
    assert lowered(api.CORS_EXPOSE_HEADERS) == lowered(cors["exposeHeaders"])
    assert lowered(api.CORS_ALLOW_METHODS) == lowered(cors["allowMethods"])
    assert cors["maxAge"] == api.CORS_MAX_AGE_SECONDS
    # And a browser MCP client can send its version header and read a 401's challenge
    assert "mcp-protocol-version" in lowered(cors["allowHeaders"])
    assert "www-authenticate" in lowered(cors["exposeHeaders"])


PROBE = """
import json
from starlette.testclient import TestClient
import functions.mcp.app as function
from tests.support.tokens import make_token

client = TestClient(function.app, base_url="http://localhost:8000")
page = "http://localhost:3000"
headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
           "mcp-protocol-version": "2025-11-25", "origin": page}
body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}

def seen(response):
    return {"status": response.status_code, "headers": dict(response.headers)}

print(json.dumps({
    "preflight": seen(client.options("/mcp", headers={
        "origin": page, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,mcp-protocol-version"})),
    "foreign preflight": seen(client.options("/mcp", headers={
        "origin": "https://evil.example", "access-control-request-method": "POST"})),
    "unauthorized": seen(client.post("/mcp", json=body, headers=headers)),
    "listed": seen(client.post("/mcp", json=body, headers={
        **headers, "authorization": "Bearer " + make_token("cors-user")})),
    "foreign": seen(client.post("/mcp", json=body, headers={
        **headers, "origin": "https://evil.example",
        "authorization": "Bearer " + make_token("cors-user")})),
}))
"""


def test_a_page_on_an_allowed_origin_can_use_mcp_locally():
    # Given the MCP function started (a fresh interpreter) with CORS_ORIGINS, as `make dev` is
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared" / "python")]),
        "CORS_ORIGINS": "http://localhost:3000",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # Then the preflight of the requests after initialize (with MCP-Protocol-Version) passes
    preflight = seen["preflight"]
    assert preflight["status"] == 200, preflight
    assert preflight["headers"]["access-control-allow-origin"] == "http://localhost:3000"
    assert "mcp-protocol-version" in preflight["headers"]["access-control-allow-headers"].lower()
    # And the page can read a 401's challenge, and list the tools with a token
    unauthorized = seen["unauthorized"]["headers"]
    assert seen["unauthorized"]["status"] == 401
    assert "www-authenticate" in unauthorized["access-control-expose-headers"].lower()
    assert unauthorized["www-authenticate"].startswith("Bearer resource_metadata=")
    assert seen["listed"]["status"] == 200
    assert seen["listed"]["headers"]["access-control-allow-origin"] == "http://localhost:3000"
    # While another origin is refused, by CORS and by the Origin check
    assert seen["foreign preflight"]["status"] == 400
    assert seen["foreign"]["status"] == 403


@pytest.mark.parametrize(
    ("allowed", "origin", "status"),
    [
        ("https://todo.example.com,http://localhost:3000", "https://todo.example.com", 200),
        ("https://todo.example.com,http://localhost:3000", "http://localhost:3000", 200),
        ("https://todo.example.com", "https://evil.example.com", 403),
        ("https://todo.example.com", "https://todo.example.com.evil.example", 403),
        # Deployed, a local page is admitted only when the stack allows it
        ("https://todo.example.com", "http://localhost:3000", 403),
        ("", "http://localhost:3000", 403),
        ("*", "https://anyone.example", 200),
    ],
)
def test_in_lambda_the_origin_check_admits_the_stacks_allowed_origins(
    configure, allowed: str, origin: str, status: int
):
    import functions.mcp.app as function

    # Given the stack's AllowedOrigins (ALLOWED_ORIGINS; no CORS_ORIGINS: API Gateway answers CORS)
    configure(ALLOWED_ORIGINS=allowed)
    token = make_token(new_user_id())
    # When a page on an origin posts to /mcp through API Gateway
    response = LambdaClient(function.handler).post(
        "/mcp",
        json=LIST_TOOLS,
        headers={**MCP_HEADERS, "authorization": f"Bearer {token}", "origin": origin},
    )
    # Then the origins the stack allows are admitted, and others refused (403, JSON-RPC)
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["error"]["code"] == -32600
