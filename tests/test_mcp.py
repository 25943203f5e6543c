"""The task tools over MCP, exercised with the official SDK's own client (`mcp.Client` over its
streamable HTTP transport) against a real uvicorn server and through the Lambda handler with
payload 2.0 events; plus the raw HTTP edges (401 challenge, RFC 9728 metadata, Host/Origin
checks, malformed requests) and the cold start (no Cohere)."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.lambda_events import LambdaClient
from tests.support.mcp_clients import (
    LAMBDA_BASE_URL,
    LambdaTransport,
    mcp_session,
    run_async,
    uvicorn_server,
)
from tests.support.tokens import make_token, new_user_id

ROOT = Path(__file__).resolve().parents[1]
MCP_HEADERS = {"accept": "application/json, text/event-stream"}
PROTOCOL = "2025-11-25"
METADATA = "/.well-known/oauth-protected-resource/mcp"
METADATA_ROOT = "/.well-known/oauth-protected-resource"
SCOPES = ["tasks:read", "tasks:write"]


def mcp_app() -> Any:
    import functions.mcp.app as module

    return module


# --- the two ways in ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_server() -> Iterator[str]:
    """A uvicorn server with `make dev`'s app (scripts/local_app.py): every function, routed by
    path as API Gateway routes them."""
    from scripts.local_app import app as local_app

    with uvicorn_server(local_app) as base_url:
        yield base_url


Connect = Callable[..., AbstractAsyncContextManager[Any]]


class Target:
    """Opens SDK client sessions to one deployment shape of the MCP function."""

    def __init__(self, kind: str, base_url: str) -> None:
        self.kind = kind
        self.base_url = base_url
        self.transports: list[LambdaTransport] = []

    def session(
        self, token: str | None, mode: str = "legacy", statuses: list[int] | None = None
    ) -> AbstractAsyncContextManager[Any]:
        transport = None
        if self.kind == "lambda":
            transport = LambdaTransport(mcp_app().handler)
            self.transports.append(transport)
        return mcp_session(self.base_url, token, transport=transport, mode=mode, statuses=statuses)


@pytest.fixture(params=["dev-server", "lambda"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "lambda":
        target = Target("lambda", LAMBDA_BASE_URL)
    else:
        target = Target("dev-server", request.getfixturevalue("dev_server"))
    yield target
    for transport in target.transports:
        transport.shutdown()


def token_for(user: str) -> str:
    return make_token(user)


def result_of(call: Any) -> dict[str, Any]:
    """A tool result's JSON (the text content; a success's structured content says the same, an
    error has none: it would not conform to the tool's output schema)."""
    assert len(call.content) == 1 and call.content[0].type == "text"
    value = json.loads(call.content[0].text)
    assert call.structured_content == (None if call.is_error else value)
    return value  # type: ignore[no-any-return]


# --- tools ----------------------------------------------------------------------------------------


def test_the_tools_listed_are_the_chat_tools_with_their_schemas(target: Target):
    from todo_backend.tasks.tools import TOOLS

    # Given a user's token, When an MCP client lists the tools
    async def scenario() -> Any:
        async with target.session(token_for(new_user_id())) as client:
            return client.server_info, await client.list_tools()

    server_info, listed = run_async(scenario)
    # Then they are the registry's tools: same names, descriptions and JSON schemas
    assert server_info.name == "todo-tasks"
    assert [tool.name for tool in listed.tools] == list(TOOLS)
    for tool in listed.tools:
        assert tool.description == TOOLS[tool.name].description
        assert tool.input_schema == TOOLS[tool.name].input_schema
        assert "user_id" not in json.dumps(tool.input_schema)
        assert tool.annotations.read_only_hint is (not TOOLS[tool.name].changes_tasks)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_user_manages_tasks_and_another_user_cannot_see_or_touch_them(target: Target, mode: str):
    owner, intruder = new_user_id(), new_user_id()

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with target.session(token_for(owner), mode) as client:
            seen["protocol"] = client.protocol_version
            added = result_of(
                await client.call_tool(
                    "add_task",
                    {"title": "Buy milk", "priority": "high", "tags": ["shop"]},
                )
            )
            task_id = added["task_id"]
            seen["added"] = added
            seen["listed"] = result_of(await client.call_tool("list_tasks", {}))
            seen["completed"] = result_of(
                await client.call_tool("complete_task", {"task_id": task_id})
            )
            seen["updated"] = result_of(
                await client.call_tool(
                    "update_task", {"task_id": task_id, "title": "Buy oat milk", "due_date": None}
                )
            )
        async with target.session(token_for(intruder), mode) as client:
            seen["intruder_list"] = result_of(await client.call_tool("list_tasks", {}))
            attempts = {}
            for name, arguments in (
                ("complete_task", {"task_id": task_id, "completed": False}),
                ("update_task", {"task_id": task_id, "title": "Hijacked"}),
                ("delete_task", {"task_id": task_id}),
            ):
                call = await client.call_tool(name, arguments)
                attempts[name] = (call.is_error, result_of(call))
            seen["intruder_attempts"] = attempts
        async with target.session(token_for(owner), mode) as client:
            seen["after_intruder"] = result_of(await client.call_tool("list_tasks", {}))
            seen["deleted"] = result_of(await client.call_tool("delete_task", {"task_id": task_id}))
            seen["final"] = result_of(await client.call_tool("list_tasks", {}))
        return seen

    seen = run_async(scenario)
    # (the initialize handshake, or the 2026-07-28 stateless protocol after server/discover)
    assert seen["protocol"] == {"legacy": "2025-11-25", "auto": "2026-07-28"}[mode]
    # Then the owner's tool calls act on the owner's task
    added = seen["added"]
    assert added["status"] == "created" and added["title"] == "Buy milk"
    assert added["priority"] == "high" and added["tags"] == ["shop"]
    assert seen["listed"]["total"] == 1
    assert [task["task_id"] for task in seen["listed"]["tasks"]] == [added["task_id"]]
    assert seen["completed"]["status"] == "completed"
    assert seen["updated"]["status"] == "updated"
    assert seen["updated"]["title"] == "Buy oat milk" and seen["updated"]["completed"] is True
    # And another user's token sees nothing, and every change it tries is a tool error
    assert seen["intruder_list"] == {"tasks": [], "total": 0, "next_cursor": None}
    for name, (is_error, body) in seen["intruder_attempts"].items():
        assert is_error is True, name
        assert "does not exist" in body["error"], name
    # And the owner's task is untouched by it, until the owner deletes it
    (task,) = seen["after_intruder"]["tasks"]
    assert (task["title"], task["completed"]) == ("Buy oat milk", True)
    assert seen["deleted"]["status"] == "deleted"
    assert seen["final"] == {"tasks": [], "total": 0, "next_cursor": None}


def test_a_failing_tool_call_is_a_tool_error_never_an_http_error(target: Target):
    async def scenario() -> dict[str, Any]:
        async with target.session(token_for(new_user_id())) as client:
            calls = {
                "empty title": ("add_task", {"title": ""}),
                "unknown field": ("add_task", {"title": "x", "user_id": "someone-else"}),
                "wrong type": ("list_tasks", {"limit": "many"}),
                "too large id": ("delete_task", {"task_id": 2**64}),
                "no such task": ("complete_task", {"task_id": 987654321}),
                "unknown tool": ("drop_tables", {}),
                "no arguments": ("update_task", None),
            }
            outcomes = {}
            for label, (name, arguments) in calls.items():
                call = await client.call_tool(name, arguments)
                outcomes[label] = (call.is_error, result_of(call))
            return outcomes

    outcomes = run_async(scenario)
    for label, (is_error, body) in outcomes.items():
        assert is_error is True, label
        assert isinstance(body["error"], str) and body["error"], label
    assert "unknown tool" in outcomes["unknown tool"][1]["error"]
    assert "title" in outcomes["empty title"][1]["error"]
    assert "user_id" in outcomes["unknown field"][1]["error"]
    if target.kind == "lambda":
        assert all(t.invocations > 0 for t in target.transports)


def test_every_tool_declares_title_hints_and_an_output_schema(target: Target):
    async def scenario() -> Any:
        async with target.session(token_for(new_user_id())) as client:
            return await client.list_tools()

    listed = {tool.name: tool for tool in run_async(scenario).tools}
    # Then every tool has a title and all four hints (it acts on nothing outside this API)
    for name, tool in listed.items():
        hints = tool.annotations
        assert tool.title and hints.title == tool.title, name
        assert None not in (
            hints.read_only_hint,
            hints.destructive_hint,
            hints.idempotent_hint,
        ), name
        assert hints.open_world_hint is False, name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", name
    # And a client asks its user before a delete, and never before a read
    assert listed["delete_task"].annotations.destructive_hint is True
    assert listed["add_task"].annotations.destructive_hint is False
    for name in ("list_tasks", "get_stats"):
        hints = listed[name].annotations
        assert (hints.read_only_hint, hints.destructive_hint) == (True, False), name
    for name in ("add_task", "complete_task", "update_task", "delete_task"):
        assert listed[name].annotations.read_only_hint is False, name


def test_structured_content_conforms_to_each_tools_output_schema(target: Target):
    import jsonschema

    # Given a user's session, with a recurring task among their tasks
    async def scenario() -> tuple[dict[str, Any], list[tuple[str, Any]]]:
        async with target.session(token_for(new_user_id())) as client:
            schemas = {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}
            calls: list[tuple[str, Any]] = []

            async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
                result = await client.call_tool(name, arguments)
                calls.append((name, result))
                return result_of(result)

            plain = await call("add_task", {"title": "Plain"})
            recurring = await call(
                "add_task",
                {
                    "title": "Water plants",
                    "description": "The ferns",
                    "priority": "high",
                    "tags": ["home"],
                    "due_date": "2027-01-04T09:00:00Z",
                    "recurrence": "FREQ=WEEKLY",
                    "remind_at": "2027-01-04T08:00:00Z",
                },
            )
            await call("list_tasks", {})
            await call("list_tasks", {"status": "pending", "tag": "home"})
            await call("complete_task", {"task_id": recurring["task_id"]})
            await call("complete_task", {"task_id": plain["task_id"]})
            await call("complete_task", {"task_id": plain["task_id"], "completed": False})
            await call("update_task", {"task_id": plain["task_id"], "due_date": "2027-02-01"})
            await call("update_task", {"task_id": plain["task_id"], "description": None})
            await call("get_stats", {})
            await call("list_tasks", {"status": "completed"})
            await call("delete_task", {"task_id": plain["task_id"]})
            return schemas, calls

    schemas, calls = run_async(scenario)
    # When every tool has been called, Then each success's structured content conforms to the
    # output schema the tool declares (and says what its text says)
    assert {name for name, _ in calls} == set(schemas)
    for name, result in calls:
        assert result.is_error is False, (name, result)
        jsonschema.validate(result.structured_content, schemas[name])
    completed = next(r.structured_content for n, r in calls if n == "complete_task")
    assert "next_task_id" in completed


def test_list_tasks_pages_through_next_cursor(target: Target):
    import base64

    import jsonschema

    # Given a user with five tasks
    another_sorts = base64.urlsafe_b64encode(b'["title","asc","a",1]').decode().rstrip("=")

    async def scenario() -> tuple[Any, list[dict[str, Any]], dict[str, Any], Any]:
        async with target.session(token_for(new_user_id())) as client:
            schema = next(
                tool.output_schema
                for tool in (await client.list_tools()).tools
                if tool.name == "list_tasks"
            )
            for n in range(5):
                await client.call_tool("add_task", {"title": f"Task {n}"})
            everything = result_of(await client.call_tool("list_tasks", {}))
            # When the list is read two at a time, each call passing the last next_cursor
            pages = [result_of(await client.call_tool("list_tasks", {"limit": 2}))]
            while pages[-1]["next_cursor"] is not None:
                assert len(pages) < 10, "the cursor does not advance"
                arguments = {"limit": 2, "cursor": pages[-1]["next_cursor"]}
                pages.append(result_of(await client.call_tool("list_tasks", arguments)))
            foreign = await client.call_tool("list_tasks", {"cursor": another_sorts})
            return schema, pages, everything, foreign

    schema, pages, everything, foreign = run_async(scenario)
    # Then the pages are the whole list in its order, each conforming to the output schema
    assert [t["task_id"] for p in pages for t in p["tasks"]] == [
        t["task_id"] for t in everything["tasks"]
    ]
    assert [len(page["tasks"]) for page in pages] == [2, 2, 1]
    assert everything["next_cursor"] is None and {page["total"] for page in pages} == {5}
    for page in pages:
        jsonschema.validate(page, schema)
    # And a cursor of another list (another sort and order) is a tool error naming the cursor
    assert foreign.is_error is True
    assert result_of(foreign)["error"].startswith("invalid arguments: cursor: not a cursor")


def test_a_result_that_breaks_its_schema_would_be_caught():
    import jsonschema

    from todo_backend.tasks.tools import TOOLS

    # The schemas are strict enough to fail: a wrong status, a missing field, a wrong type
    schema = TOOLS["add_task"].output_schema
    good = {
        "task_id": 1,
        "status": "created",
        "title": "t",
        "description": None,
        "priority": "low",
        "due_date": None,
        "tags": [],
        "completed": False,
        "recurrence": None,
        "remind_at": None,
        "all_day": False,
    }
    jsonschema.validate(good, schema)
    for broken in (
        {**good, "status": "deleted"},
        {k: v for k, v in good.items() if k != "title"},
        {**good, "task_id": "1"},
        {**good, "priority": "urgent"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


# --- warm Lambda containers -------------------------------------------------------------------


@pytest.mark.parametrize("fresh_loop", [False, True], ids=["one loop", "a new loop per invocation"])
def test_a_warm_container_serves_invocation_after_invocation(fresh_loop: bool):
    # Given one warm container (one process, one thread), whose event loop may be new each time
    transport = LambdaTransport(mcp_app().handler, fresh_loop_per_invocation=fresh_loop)
    user = new_user_id()

    async def scenario() -> list[str]:
        titles = []
        for round_ in range(3):
            async with mcp_session(LAMBDA_BASE_URL, token_for(user), transport=transport) as client:
                await client.list_tools()
                result_of(await client.call_tool("add_task", {"title": f"Task {round_}"}))
                listed = result_of(await client.call_tool("list_tasks", {}))
                titles = [task["title"] for task in listed["tasks"]]
        return titles

    # When three client sessions in a row go through its handler
    try:
        titles = run_async(scenario)
    finally:
        transport.shutdown()
    # Then every invocation was answered
    assert titles == ["Task 2", "Task 1", "Task 0"]
    assert transport.invocations >= 12
    assert transport.distinct_loops == (transport.invocations if fresh_loop else 1)


def _rpc(
    method: str, params: dict[str, Any] | None = None, request_id: int | None = 1
) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        body["id"] = request_id
    if params is not None:
        body["params"] = params
    return body


def test_three_warm_invocations_of_the_handler_in_a_row():
    # Given the handler in this process (Mangum's event loop), and a user's token
    client = LambdaClient(mcp_app().handler)
    headers = {**MCP_HEADERS, "authorization": f"Bearer {token_for(new_user_id())}"}
    versioned = {**headers, "mcp-protocol-version": PROTOCOL}
    initialize = _rpc(
        "initialize",
        {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    )
    # When initialize, tools/list and tools/call are three invocations in a row
    started = time.perf_counter()
    responses = [
        client.post("/mcp", json=initialize, headers=headers),
        client.post("/mcp", json=_rpc("tools/list", request_id=2), headers=versioned),
        client.post(
            "/mcp",
            json=_rpc("tools/call", {"name": "add_task", "arguments": {"title": "t"}}, 3),
            headers=versioned,
        ),
    ]
    elapsed = time.perf_counter() - started
    # Then each is a JSON answer (no SSE, no session id)
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert "mcp-session-id" not in response.headers
    first, listed, called = (response.json() for response in responses)
    assert first["result"]["protocolVersion"] == PROTOCOL
    assert first["result"]["capabilities"]["tools"] is not None
    assert len(listed["result"]["tools"]) >= 5
    assert called["result"]["isError"] is False
    assert called["result"]["structuredContent"]["status"] == "created"
    assert elapsed < 5


# --- authentication ------------------------------------------------------------------------------


def _bad_authorizations() -> dict[str, str | None]:
    user = new_user_id()
    return {
        "none": None,
        "bearer without token": "Bearer",
        "basic": "Basic dXNlcjpwYXNz",
        "garbage": "Bearer not-a-jwt",
        "expired": f"Bearer {make_token(user, expires_in=-3600)}",
        "other secret": f"Bearer {make_token(user, secret='another-secret-of-32-bytes-at-least')}",
        "no sub": f"Bearer {make_token(None)}",
        "alg none": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    }


def test_bad_tokens_get_401_with_the_resource_metadata_challenge(dev_server: str):
    # Given a valid JSON-RPC request, and tokens that are missing or invalid
    body = _rpc("tools/list")
    lambda_client = LambdaClient(mcp_app().handler)
    for label, authorization in _bad_authorizations().items():
        headers = dict(MCP_HEADERS)
        if authorization is not None:
            headers["authorization"] = authorization
        # When each is sent through the Lambda handler and to the dev server
        through_lambda = lambda_client.post("/mcp", json=body, headers=headers)
        over_http = httpx.post(f"{dev_server}/mcp", json=body, headers=headers, timeout=10)
        # Then both answer 401 and point to the protected resource metadata of their origin
        for response, origin in (
            (through_lambda, LAMBDA_BASE_URL),
            (over_http, dev_server),
        ):
            assert response.status_code == 401, (label, response.text)
            assert response.headers["www-authenticate"] == (
                f'Bearer resource_metadata="{origin}{METADATA}", scope="tasks:read tasks:write"'
            ), label
            assert response.json() == {"detail": response.json()["detail"]}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_sdk_client_cannot_connect_with_an_expired_token(target: Target, mode: str):
    from mcp import MCPError

    statuses: list[int] = []

    async def scenario() -> None:
        expired = make_token(new_user_id(), expires_in=-3600)
        async with target.session(expired, mode, statuses) as client:
            await client.list_tools()

    with pytest.raises(BaseExceptionGroup) as raised:
        run_async(scenario)
    assert raised.group_contains(MCPError)
    assert statuses and set(statuses) == {401}


# --- protected resource metadata ----------------------------------------------------------------


def test_protected_resource_metadata_names_the_oauth_issuer(configure, dev_server: str):
    # Given BETTER_AUTH_URL, the front end's origin (its OAuth provider plugin's issuer is
    # <origin>/api/auth)
    configure(BETTER_AUTH_URL="https://todo.example.com")
    for path in (METADATA, METADATA_ROOT):
        # When a client reads the metadata, without a token, at /mcp's own location (RFC 9728
        # section 3.1) and at the root, through Lambda and from the dev server
        through_lambda = LambdaClient(mcp_app().handler).get(path)
        over_http = httpx.get(f"{dev_server}{path}", timeout=10)
        # Then it names this API's /mcp as the resource, the OAuth issuer as its authorization
        # server, and the scopes
        for response, origin in ((through_lambda, LAMBDA_BASE_URL), (over_http, dev_server)):
            assert response.status_code == 200, response.text
            assert response.json() == {
                "resource": f"{origin}/mcp",
                "authorization_servers": ["https://todo.example.com/api/auth"],
                "bearer_methods_supported": ["header"],
                "scopes_supported": SCOPES,
                "resource_name": "Todo tasks",
            }


def test_oauth_issuer_and_public_url_override_the_defaults(configure, dev_server: str):
    # Given OAUTH_ISSUER and PUBLIC_URL
    configure(
        BETTER_AUTH_URL="https://todo.example.com",
        OAUTH_ISSUER="https://auth.example.com/oauth",
        PUBLIC_URL="https://api.example.com",
    )
    # When the metadata and a 401 are read through Lambda (another domain in the event) and from
    # the dev server with a hostile Host header
    responses = [
        LambdaClient(mcp_app().handler).get(METADATA),
        httpx.get(f"{dev_server}{METADATA}", headers={"host": "evil.example"}, timeout=10),
    ]
    challenges = [
        LambdaClient(mcp_app().handler).post("/mcp", json=_rpc("tools/list"), headers=MCP_HEADERS),
        httpx.post(
            f"{dev_server}/mcp",
            json=_rpc("tools/list"),
            headers={**MCP_HEADERS, "host": "evil.example"},
            timeout=10,
        ),
    ]
    # Then both name PUBLIC_URL's resource and the configured issuer, never the Host
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["resource"] == "https://api.example.com/mcp"
        assert response.json()["authorization_servers"] == ["https://auth.example.com/oauth"]
    for response in challenges:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith(
            f'Bearer resource_metadata="https://api.example.com{METADATA}"'
        )


def test_without_public_url_a_foreign_host_gets_no_metadata(dev_server: str):
    # Given no PUBLIC_URL (locally): the origin comes from the Host header, a local one only
    response = httpx.get(f"{dev_server}{METADATA}", headers={"host": "evil.example"}, timeout=10)
    # Then a foreign Host is refused instead of being reflected into the metadata
    assert response.status_code == 421
    assert "evil.example" not in response.text


def test_protected_resource_metadata_without_an_authorization_server(configure):
    configure(BETTER_AUTH_URL="")
    response = LambdaClient(mcp_app().handler).get(METADATA)
    assert response.status_code == 200
    assert response.json() == {
        "resource": f"{LAMBDA_BASE_URL}/mcp",
        "bearer_methods_supported": ["header"],
        "scopes_supported": SCOPES,
        "resource_name": "Todo tasks",
    }


# --- transport checks and malformed requests ---------------------------------------------------


def _authorized(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **MCP_HEADERS,
        "authorization": f"Bearer {token_for(new_user_id())}",
        "mcp-protocol-version": PROTOCOL,
        **(extra or {}),
    }


def test_host_and_origin_are_checked_against_dns_rebinding(dev_server: str):
    body = _rpc("tools/list")

    def post(headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{dev_server}/mcp", json=body, headers=_authorized(headers), timeout=10)

    # A page on another site whose name resolves to this machine: its Host is refused
    assert post({"host": "rebound.example.com"}).status_code == 421
    # A page of another origin: refused; a local front end: allowed
    assert post({"origin": "https://evil.example.com"}).status_code == 403
    assert post({"origin": "http://localhost:3000"}).status_code == 200
    assert post({"host": f"localhost:{dev_server.rsplit(':', 1)[1]}"}).status_code == 200
    # Through API Gateway, the API's own host (from the event) is allowed
    through_lambda = LambdaClient(mcp_app().handler).post(
        "/mcp", json=body, headers=_authorized({"origin": LAMBDA_BASE_URL})
    )
    assert through_lambda.status_code == 200, through_lambda.text


def test_malformed_requests_are_clear_4xx_never_500(dev_server: str):
    client = LambdaClient(mcp_app().handler)
    headers = _authorized()
    cases = {
        "not json": (client.post("/mcp", content="{nope", headers=headers), 400),
        "text body": (
            client.post("/mcp", content="hi", headers={**headers, "content-type": "text/plain"}),
            400,
        ),
        "no accept": (
            client.post(
                "/mcp", json=_rpc("tools/list"), headers={**headers, "accept": "text/html"}
            ),
            406,
        ),
        "too large": (
            client.post(
                "/mcp",
                json=_rpc("tools/call", {"name": "add_task", "arguments": {"x": "a" * 70_000}}),
                headers=headers,
            ),
            413,
        ),
        "unknown method": (client.post("/mcp", json=_rpc("tasks/drop"), headers=headers), 200),
        "notification": (
            client.post(
                "/mcp", json=_rpc("notifications/initialized", request_id=None), headers=headers
            ),
            202,
        ),
        "get": (httpx.get(f"{dev_server}/mcp", headers=headers, timeout=10), 405),
    }
    for label, (response, status) in cases.items():
        assert response.status_code == status, (label, response.status_code, response.text)
    unknown = cases["unknown method"][0].json()
    assert unknown["error"]["code"] == -32601


MARKER = "SECRET-TEXT-7f3a"


def assert_small_json_rpc_error(response: Any, status: int, code: int, label: str) -> None:
    """A JSON-RPC error object in a JSON body of at most 1 KiB that echoes nothing."""
    assert response.status_code == status, (label, response.status_code, response.text)
    assert response.headers["content-type"] == "application/json", label
    raw = response.content if hasattr(response, "content") else response.text.encode()
    assert len(raw) <= 1024, (label, len(raw))
    assert MARKER not in response.text, (label, response.text)
    body = response.json()
    assert body["jsonrpc"] == "2.0" and set(body) == {"jsonrpc", "id", "error"}, label
    assert body["error"]["code"] == code, (label, body)
    assert set(body["error"]) == {"code", "message"}, label


def test_errors_are_small_json_rpc_objects_that_echo_nothing(dev_server: str):
    client = LambdaClient(mcp_app().handler)
    headers = _authorized()
    as_json = {**headers, "content-type": "application/json"}
    big = "x" * 70_000
    cases: dict[str, tuple[Any, int, int]] = {
        "batch array": (
            client.post(
                "/mcp",
                json=[_rpc("tools/call", {"name": "add_task", "arguments": {"title": MARKER}})],
                headers=headers,
            ),
            400,
            -32600,
        ),
        "not json": (client.post("/mcp", content=f"{{{MARKER}", headers=as_json), 400, -32700),
        "not json-rpc": (client.post("/mcp", json={"hello": MARKER}, headers=headers), 400, -32600),
        "unknown method": (
            client.post("/mcp", json=_rpc(f"tasks/{MARKER}"), headers=headers),
            200,
            -32601,
        ),
        "invalid params": (
            client.post(
                "/mcp", json=_rpc("tools/call", {"arguments": {"title": MARKER}}), headers=headers
            ),
            200,
            -32602,
        ),
        "a string id that is too long": (
            client.post(
                "/mcp", json={**_rpc(f"tasks/{MARKER}"), "id": MARKER * 10}, headers=headers
            ),
            200,
            -32601,
        ),
        "body over 64 KiB": (
            client.post(
                "/mcp", json=_rpc("tools/call", {"name": MARKER, "x": big}), headers=headers
            ),
            413,
            -32600,
        ),
        "body over 1 MiB": (
            client.post("/mcp", content=MARKER + "x" * (1024 * 1024 + 1), headers=as_json),
            413,
            -32600,
        ),
        "wrong content type": (
            client.post(
                "/mcp",
                content=json.dumps(_rpc(f"tasks/{MARKER}")),
                headers={**headers, "content-type": "text/plain"},
            ),
            400,
            -32600,
        ),
        "no accept": (
            client.post(
                "/mcp", json=_rpc(f"tasks/{MARKER}"), headers={**headers, "accept": "text/html"}
            ),
            406,
            -32600,
        ),
        "foreign origin": (
            client.post(
                "/mcp",
                json=_rpc("tools/list"),
                headers={**headers, "origin": f"https://{MARKER}.example"},
            ),
            403,
            -32600,
        ),
        "foreign host": (
            httpx.post(
                f"{dev_server}/mcp",
                json=_rpc(f"tasks/{MARKER}"),
                headers={**headers, "host": "localhost.evil.example"},
                timeout=10,
            ),
            421,
            -32600,
        ),
        "get": (httpx.get(f"{dev_server}/mcp", headers=headers, timeout=10), 405, -32600),
    }
    for label, (response, status, code) in cases.items():
        assert_small_json_rpc_error(response, status, code, label)
    # And an error keeps a request's numeric id, as JSON-RPC wants; a long string id is dropped
    assert cases["unknown method"][0].json()["id"] == 1
    assert cases["a string id that is too long"][0].json()["id"] is None
    assert cases["batch array"][0].json()["id"] is None


# --- cold start ---------------------------------------------------------------------------------

PROBE = """
import json, sys
import functions.mcp.app as function
from tests.support.lambda_events import LambdaContext, http_api_event
from tests.support.tokens import make_token
headers = {"authorization": "Bearer " + make_token("probe-user"),
           "content-type": "application/json", "accept": "application/json, text/event-stream",
           "mcp-protocol-version": "2025-11-25"}
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
event = http_api_event("POST", "/mcp", headers=headers, body=body)
response = function.handler(event, LambdaContext())
print(json.dumps({
    "status": response["statusCode"],
    "tools": len(json.loads(response["body"])["result"]["tools"]),
    "loaded": sorted(name for name in ("cohere", "todo_backend.chat", "boto3", "alembic")
                     if name in sys.modules),
}))
"""


def test_the_mcp_function_never_imports_cohere_or_the_chat_code():
    # Given a fresh interpreter whose database does not exist
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared" / "python")]),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nowhere",
    }
    # When the MCP function starts and lists its tools
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    # Then it answered without the database, Cohere, the chat code or the AWS SDK
    assert probe["status"] == 200
    assert probe["tools"] >= 5
    assert probe["loaded"] == []


def test_an_invalid_better_auth_url_fails_the_cold_start_naming_it(configure):
    from todo_backend.core.settings import ConfigurationError, load_settings

    configure(BETTER_AUTH_URL="not a url")
    with pytest.raises(ConfigurationError, match="BETTER_AUTH_URL"):
        load_settings()
