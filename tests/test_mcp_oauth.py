"""An MCP client that knows only the server URL gets a token from a real Better Auth server and
uses the tools (API.md, third wave, "MCP for real clients").

The official MCP Python SDK client with its OAuth provider discovers the protected resource
metadata from the 401, the authorization server from it (RFC 8414 at the front end), registers
itself (dynamic registration of a public client with a loopback redirect), runs the
authorization-code flow with PKCE and `resource=<origin>/mcp`, the user's consent given headlessly
by `tests.support.better_auth.Browser`, then lists and calls tools with the access token."""

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import better_auth
from tests.support.mcp_clients import run_async, uvicorn_server

CALLBACK = "http://127.0.0.1:8765/callback"


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    """`make dev`'s app (every function), served by uvicorn."""
    from scripts.local_app import app

    with uvicorn_server(app) as base_url:
        yield base_url


@pytest.fixture
def front_end(api: str, configure) -> Iterator[str]:
    """Better Auth for this API's /mcp, and the API configured with its origin."""
    reason = better_auth.missing()
    if reason is not None:
        pytest.skip(reason)
    with better_auth.better_auth_server(f"{api}/mcp") as url:
        configure(BETTER_AUTH_URL=url)
        yield url


def claims_of(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload = (
        json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        for part in token.split(".")[:2]
    )
    return header, payload


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: Any = None
        self.client_info: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


async def connect_with_oauth(
    api: str, browser: better_auth.Browser, scope: str, calls: list[tuple[str, dict[str, Any]]]
) -> tuple[MemoryStorage, list[Any], list[Any]]:
    """The SDK client, with only the server URL and its OAuth provider: the tools it lists and
    the results of `calls`."""
    import httpx2
    from mcp import Client
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    storage = MemoryStorage()
    redirects: list[str] = []

    async def redirect_handler(authorization_url: str) -> None:
        redirects.append(await browser.authorize(authorization_url))

    async def callback_handler() -> AuthorizationCodeResult:
        parameters = better_auth.redirect_parameters(redirects[-1])
        return AuthorizationCodeResult(
            code=parameters["code"], state=parameters.get("state"), iss=parameters.get("iss")
        )

    provider = OAuthClientProvider(
        server_url=f"{api}/mcp",
        client_metadata=OAuthClientMetadata(
            client_name="pytest MCP client",
            redirect_uris=[CALLBACK],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
            scope=scope,
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        streams = streamable_http_client(f"{api}/mcp", http_client=http)
        async with Client(streams, mode="legacy") as client:
            tools = (await client.list_tools()).tools
            results = [await client.call_tool(name, arguments) for name, arguments in calls]
    return storage, tools, results


def test_an_mcp_client_gets_a_token_from_better_auth_and_uses_the_tools(api: str, front_end: str):
    async def scenario() -> dict[str, Any]:
        browser = better_auth.Browser(front_end)
        try:
            user = await browser.sign_up(f"ada-{uuid.uuid4().hex[:8]}@example.com")
            storage, tools, results = await connect_with_oauth(
                api,
                browser,
                "tasks:read tasks:write",
                [("add_task", {"title": "Pay rent"}), ("list_tasks", {})],
            )
            session = await browser.session_jwt()
            return {
                "user": user,
                "storage": storage,
                "tools": tools,
                "results": results,
                "session": session,
            }
        finally:
            await browser.aclose()

    # Given a user signed up at the front end, When an MCP client that knows only <api>/mcp
    # connects (discovery, registration, authorization code with PKCE, consent, token)
    seen = run_async(scenario)
    # Then it lists the tools and its calls act for that user
    assert {tool.name for tool in seen["tools"]} >= {"add_task", "list_tasks", "delete_task"}
    added, listed = seen["results"]
    assert added.is_error is False and added.structured_content["title"] == "Pay rent"
    assert [t["title"] for t in listed.structured_content["tasks"]] == ["Pay rent"]
    # And the token is what the OAuth provider issues for the resource: EdDSA at+jwt from the
    # JWT plugin's key set, aud = <api>/mcp, iss = <front end>/api/auth, the granted scopes
    access_token = seen["storage"].tokens.access_token
    header, claims = claims_of(access_token)
    assert header["alg"] == "EdDSA" and header["typ"].lower() == "at+jwt"
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert f"{api}/mcp" in audiences
    assert claims["iss"] == f"{front_end}/api/auth"
    assert claims["sub"] == seen["user"]
    assert set(claims["scope"].split()) >= {"tasks:read", "tasks:write"}
    # And that token is refused by the REST routes, where the user's session JWT works
    refused = httpx.get(f"{api}/api/tasks", headers={"authorization": f"Bearer {access_token}"})
    assert refused.status_code == 401
    rest = httpx.get(f"{api}/api/tasks", headers={"authorization": f"Bearer {seen['session']}"})
    assert rest.status_code == 200, rest.text
    assert [task["title"] for task in rest.json()["items"]] == ["Pay rent"]


def test_a_read_only_grant_reads_but_changes_nothing(api: str, front_end: str):
    async def scenario() -> tuple[MemoryStorage, list[Any]]:
        # The client asks for both scopes (the challenge names them); the user grants one
        browser = better_auth.Browser(front_end, grant="tasks:read")
        try:
            await browser.sign_up(f"bob-{uuid.uuid4().hex[:8]}@example.com")
            storage, _, results = await connect_with_oauth(
                api,
                browser,
                "tasks:read tasks:write",
                [("add_task", {"title": "Sneaky"}), ("list_tasks", {}), ("get_stats", {})],
            )
            return storage, results
        finally:
            await browser.aclose()

    # Given a user who grants an MCP client tasks:read only, on the consent page
    storage, (added, listed, stats) = run_async(scenario)
    assert claims_of(storage.tokens.access_token)[1]["scope"].split() == ["tasks:read"]
    # Then a change is a tool error naming tasks:write, and nothing was created
    assert added.is_error is True and "tasks:write" in added.content[0].text
    assert listed.is_error is False and listed.structured_content["total"] == 0
    assert stats.is_error is False and stats.structured_content["total"] == 0
