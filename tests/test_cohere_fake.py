"""Prove that tests/fakes/cohere_server.py is faithful enough for the real ``cohere`` SDK.

Every test drives the real ``cohere.ClientV2`` against the fake over HTTP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import cohere
import cohere.core.http_client
import httpx
import pytest
from cohere.core.api_error import ApiError
from cohere.errors import (
    BadRequestError,
    InternalServerError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)

from tests.fakes.cohere_server import (
    FakeCohere,
    error_reply,
    raw_reply,
    slow_reply,
    text_reply,
    tool_calls_reply,
)

# The SDK itself triggers a pydantic deprecation warning while parsing discriminated unions.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:cohere.*")

MODEL = "command-a-03-2025"
TIMEOUT = 0.5
NO_RETRIES: dict = {"max_retries": 0}

ADD_TODO_TOOL = {
    "type": "function",
    "function": {
        "name": "add_todo",
        "description": "Create a todo item for the current user.",
        "parameters": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "description": "Short title of the todo."},
                "due": {"type": "string", "description": "ISO 8601 date, optional."},
            },
            "required": ["title"],
        },
    },
}
LIST_TODOS_TOOL = {
    "type": "function",
    "function": {
        "name": "list_todos",
        "description": "List the current user's todos.",
        "parameters": {"type": "object", "properties": {}},
    },
}


@pytest.fixture
def fake() -> Iterator[FakeCohere]:
    with FakeCohere() as server:
        yield server


@pytest.fixture
def client(fake: FakeCohere) -> cohere.ClientV2:
    return cohere.ClientV2(api_key="test", base_url=fake.base_url, timeout=TIMEOUT)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# --------------------------------------------------------------------------------------------
# Successful responses
# --------------------------------------------------------------------------------------------


def test_text_reply_is_parsed_by_the_sdk(fake: FakeCohere, client: cohere.ClientV2) -> None:
    # Given a scripted plain text answer
    fake.script(text_reply("You have no todos yet."))

    # When the SDK sends a chat request
    response = client.chat(model=MODEL, messages=[user("What do I have to do?")])

    # Then the SDK parses text, finish reason, id and usage
    assert response.message.content[0].type == "text"
    assert response.message.content[0].text == "You have no todos yet."
    assert response.message.tool_calls is None
    assert response.finish_reason == "COMPLETE"
    assert response.id
    assert response.usage.billed_units.input_tokens > 0
    assert response.usage.tokens.output_tokens > 0
    fake.assert_all_consumed()


def test_sdk_posts_to_v2_chat_under_base_url_with_bearer_auth(
    fake: FakeCohere, client: cohere.ClientV2
) -> None:
    # Given a scripted reply
    fake.script(text_reply("ok"))

    # When the SDK is pointed at the fake's bare origin
    client.chat(model=MODEL, messages=[user("hi")], temperature=0.2)

    # Then it appended /v2/chat itself and sent JSON with the API key as a bearer token
    request = fake.last_request
    assert fake.base_url.startswith("http://127.0.0.1:")
    assert request.method == "POST"
    assert request.path == "/v2/chat"
    assert request.header("Authorization") == "Bearer test"
    assert request.header("content-type") == "application/json"
    assert request.json == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "stream": False,
    }


def test_single_tool_call_is_parsed(fake: FakeCohere, client: cohere.ClientV2) -> None:
    # Given a scripted tool call with dict arguments
    fake.script(
        tool_calls_reply(
            ("add_todo", {"title": "Buy milk", "due": "2025-01-31"}),
            tool_plan="I will add the todo for the user.",
        )
    )

    # When the SDK sends a chat request with tools
    response = client.chat(
        model=MODEL, messages=[user("Remind me to buy milk")], tools=[ADD_TODO_TOOL]
    )

    # Then the tool call is exposed with arguments as a JSON string
    assert response.finish_reason == "TOOL_CALL"
    assert response.message.tool_plan == "I will add the todo for the user."
    assert response.message.content is None
    [call] = response.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("add_todo_")
    assert call.function.name == "add_todo"
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == {"title": "Buy milk", "due": "2025-01-31"}


def test_several_tool_calls_in_one_response_have_unique_ids(
    fake: FakeCohere, client: cohere.ClientV2
) -> None:
    # Given a scripted response with three parallel tool calls (one with an explicit id)
    fake.script(
        tool_calls_reply(
            ("add_todo", {"title": "A"}),
            ("add_todo", {"title": "B"}),
            ("list_todos", {}, "list_todos_fixedid0001"),
        )
    )

    # When the SDK sends the request
    response = client.chat(
        model=MODEL,
        messages=[user("Add A and B, then list")],
        tools=[ADD_TODO_TOOL, LIST_TODOS_TOOL],
    )

    # Then all calls are parsed in order with distinct ids
    calls = response.message.tool_calls
    assert [c.function.name for c in calls] == ["add_todo", "add_todo", "list_todos"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"title": "A"}, {"title": "B"}, {}]
    assert len({c.id for c in calls}) == 3
    assert calls[2].id == "list_todos_fixedid0001"


def test_raw_string_arguments_are_sent_verbatim(fake: FakeCohere, client: cohere.ClientV2) -> None:
    # Given a tool call whose arguments are malformed JSON
    fake.script(tool_calls_reply(("add_todo", '{"title": "unterminated')))

    # When the SDK parses the response
    response = client.chat(model=MODEL, messages=[user("add")], tools=[ADD_TODO_TOOL])

    # Then the SDK does not validate the string; the caller sees it unchanged
    arguments = response.message.tool_calls[0].function.arguments
    assert arguments == '{"title": "unterminated'
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)


# --------------------------------------------------------------------------------------------
# What the SDK sends
# --------------------------------------------------------------------------------------------


def test_request_body_contains_model_messages_and_tools(
    fake: FakeCohere, client: cohere.ClientV2
) -> None:
    # Given a scripted reply
    fake.script(text_reply("ok"))
    messages = [
        {"role": "system", "content": "You manage todos."},
        user("List my todos"),
    ]

    # When the SDK sends dict messages and dict tools
    client.chat(model=MODEL, messages=messages, tools=[ADD_TODO_TOOL, LIST_TODOS_TOOL])

    # Then the body carries them unchanged
    request = fake.last_request
    assert request.model == MODEL
    assert request.messages == messages
    assert request.tools == [ADD_TODO_TOOL, LIST_TODOS_TOOL]
    assert request.tool_names == ["add_todo", "list_todos"]
    assert request.json["stream"] is False


def test_tool_call_history_round_trips_as_dicts(fake: FakeCohere, client: cohere.ClientV2) -> None:
    # Given a first turn that asks for two tools, and a final text answer
    fake.script(
        tool_calls_reply(
            ("add_todo", {"title": "Buy milk"}), ("list_todos", {}), tool_plan="Add, then list."
        ),
        text_reply("Added 'Buy milk'. You now have 1 todo."),
    )
    messages: list = [user("Add buy milk and list my todos")]
    first = client.chat(model=MODEL, messages=messages, tools=[ADD_TODO_TOOL, LIST_TODOS_TOOL])

    # When the history is replayed as plain dicts with one tool message per call
    messages.append(
        {
            "role": "assistant",
            "tool_plan": first.message.tool_plan,
            "tool_calls": [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.function.name, "arguments": tc.function.arguments},
                }
                for tc in first.message.tool_calls
            ],
        }
    )
    for tc in first.message.tool_calls:
        result = {"ok": True, "tool": tc.function.name}
        messages.append({"role": "tool", "tool_call_id": tc.id, "content": json.dumps(result)})
    second = client.chat(model=MODEL, messages=messages, tools=[ADD_TODO_TOOL, LIST_TODOS_TOOL])

    # Then the fake accepted it and received exactly what was built
    assert second.message.content[0].text.startswith("Added")
    sent = fake.last_request.messages
    assert sent == messages
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in sent[2:]] == [tc.id for tc in first.message.tool_calls]
    assert isinstance(sent[1]["tool_calls"][0]["function"]["arguments"], str)


def test_response_message_and_typed_models_serialize_like_dicts(
    fake: FakeCohere, client: cohere.ClientV2
) -> None:
    # Given a tool call turn followed by a text answer
    fake.script(tool_calls_reply(("list_todos", {})), text_reply("Nothing to do."))
    messages: list = [cohere.UserChatMessageV2(content="List my todos")]
    first = client.chat(model=MODEL, messages=messages, tools=[cohere.ToolV2(**LIST_TODOS_TOOL)])

    # When the response message itself and typed tool messages are appended to the history
    messages.append(first.message)
    call = first.message.tool_calls[0]
    messages.append(
        cohere.ToolChatMessageV2(
            tool_call_id=call.id,
            content=[
                cohere.DocumentToolContent(document=cohere.Document(data={"todos": []})),
                cohere.TextToolContent(text="0 todos"),
            ],
        )
    )
    client.chat(model=MODEL, messages=messages)

    # Then the wire format equals the plain-dict form (None fields are dropped)
    assert fake.last_request.messages == [
        {"role": "user", "content": "List my todos"},
        {
            "role": "assistant",
            "tool_plan": first.message.tool_plan,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "list_todos", "arguments": "{}"},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": [
                {"type": "document", "document": {"data": {"todos": []}}},
                {"type": "text", "text": "0 todos"},
            ],
        },
    ]


def test_orphan_tool_message_is_rejected_with_400(
    fake: FakeCohere, client: cohere.ClientV2
) -> None:
    # Given a scripted reply that must not be consumed
    fake.script(text_reply("unused"))

    # When the history has a tool result with no matching assistant tool call
    with pytest.raises(BadRequestError) as caught:
        client.chat(
            model=MODEL,
            messages=[user("hi"), {"role": "tool", "tool_call_id": "nope_1", "content": "x"}],
            request_options=NO_RETRIES,
        )

    # Then the fake answers 400 like the API and keeps the scripted reply
    assert "nope_1" in caught.value.body["message"]
    assert fake.pending == 1


def many_fields_tool(name: str, fields: int) -> dict:
    properties = {f"field_{index}": {"type": "string"} for index in range(fields)}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": "A tool with many fields.",
            "parameters": {"type": "object", "properties": properties, "required": ["field_0"]},
        },
    }


@pytest.mark.parametrize(
    ("tools", "problem"),
    [
        ([ADD_TODO_TOOL, LIST_TODOS_TOOL], "'list_todos'"),
        ([many_fields_tool("a", 150), many_fields_tool("b", 51)], "at most 200 fields"),
    ],
    ids=["no-required-parameter", "201-fields"],
)
def test_strict_tools_rules_are_enforced_like_the_api(
    fake: FakeCohere, client: cohere.ClientV2, tools: list, problem: str
) -> None:
    # Given a scripted reply that must not be consumed
    fake.script(text_reply("unused"))

    # When strict mode is asked for with tools it does not accept
    with pytest.raises(BadRequestError) as caught:
        client.chat(
            model=MODEL,
            messages=[user("hi")],
            tools=tools,
            strict_tools=True,
            request_options=NO_RETRIES,
        )

    # Then the fake refuses it with 400, naming the problem, and keeps the reply
    assert problem in caught.value.body["message"]
    assert fake.pending == 1


def test_strict_tools_accepts_tools_within_its_rules(
    fake: FakeCohere, client: cohere.ClientV2
) -> None:
    # Given tools that each require a parameter, 200 fields in all
    fake.script(text_reply("ok"))
    tools = [many_fields_tool("a", 150), many_fields_tool("b", 48), ADD_TODO_TOOL]

    # When strict mode is asked for
    response = client.chat(
        model=MODEL,
        messages=[user("hi")],
        tools=tools,
        strict_tools=True,
        request_options=NO_RETRIES,
    )

    # Then it answers, and the request said strict_tools
    assert response.message.content[0].text == "ok"
    assert fake.last_request.json["strict_tools"] is True


# --------------------------------------------------------------------------------------------
# Errors, retries and timeouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exception_class"),
    [
        (400, BadRequestError),
        (401, UnauthorizedError),
        (429, TooManyRequestsError),
        (500, InternalServerError),
        (503, ServiceUnavailableError),
    ],
)
def test_error_status_maps_to_sdk_exception(
    fake: FakeCohere, client: cohere.ClientV2, status: int, exception_class: type[ApiError]
) -> None:
    # Given a scripted error
    fake.script(error_reply(status, "boom"))

    # When the SDK calls with retries disabled
    with pytest.raises(exception_class) as caught:
        client.chat(model=MODEL, messages=[user("hi")], request_options=NO_RETRIES)

    # Then it raises the typed error (an ApiError) with status code and parsed JSON body
    error = caught.value
    assert isinstance(error, ApiError)
    assert error.status_code == status
    assert error.body["message"] == "boom"
    assert error.body["id"]
    assert len(fake.requests) == 1


def test_429_exposes_retry_after_header(fake: FakeCohere, client: cohere.ClientV2) -> None:
    # Given a rate limit error with Retry-After
    fake.script(error_reply(429, headers={"Retry-After": "7"}))

    # When the SDK calls with retries disabled
    with pytest.raises(TooManyRequestsError) as caught:
        client.chat(model=MODEL, messages=[user("hi")], request_options=NO_RETRIES)

    # Then the header is available (lower-cased key) on the exception
    assert caught.value.headers["retry-after"] == "7"
    assert "Trial key" in caught.value.body["message"]


def test_non_json_error_body_becomes_plain_api_error(
    fake: FakeCohere, client: cohere.ClientV2
) -> None:
    # Given a proxy-style HTML 502 (a status without a dedicated SDK class)
    fake.script(raw_reply(502, "<html>502 Bad Gateway</html>"))

    # When the SDK calls
    with pytest.raises(ApiError) as caught:
        client.chat(model=MODEL, messages=[user("hi")], request_options=NO_RETRIES)

    # Then it is a bare ApiError whose body is the raw text
    assert type(caught.value) is ApiError
    assert caught.value.status_code == 502
    assert caught.value.body == "<html>502 Bad Gateway</html>"


def test_unscripted_request_fails_loudly(fake: FakeCohere, client: cohere.ClientV2) -> None:
    # Given nothing scripted
    # When the SDK calls
    with pytest.raises(InternalServerError) as caught:
        client.chat(model=MODEL, messages=[user("hi")], request_options=NO_RETRIES)

    # Then the failure names the cause
    assert "unscripted request" in caught.value.body["message"]


def test_sdk_retries_retryable_statuses_twice_by_default(
    fake: FakeCohere, client: cohere.ClientV2, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two 503s and a 429 (with Retry-After), then success; backoff sleeps are recorded
    sleeps: list[float] = []
    monkeypatch.setattr(cohere.core.http_client.time, "sleep", sleeps.append)
    fake.script(
        error_reply(503),
        error_reply(429, headers={"Retry-After": "7"}),
        text_reply("finally"),
    )

    # When the SDK calls with the default retry settings
    response = client.chat(model=MODEL, messages=[user("hi")])

    # Then it made 3 attempts: exponential backoff ~1 s first, then honoured Retry-After exactly
    assert response.message.content[0].text == "finally"
    assert len(fake.requests) == 3
    assert len(sleeps) == 2
    assert 0.85 <= sleeps[0] <= 1.15
    assert sleeps[1] == 7.0


def test_retries_are_exhausted_then_the_last_error_is_raised(
    fake: FakeCohere, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client-level max_retries=1 and only 500s
    monkeypatch.setattr(cohere.core.http_client.time, "sleep", lambda _seconds: None)
    client = cohere.ClientV2(api_key="test", base_url=fake.base_url, timeout=TIMEOUT, max_retries=1)
    fake.script(error_reply(500), error_reply(500, "second"), text_reply("never"))

    # When the SDK calls
    with pytest.raises(InternalServerError) as caught:
        client.chat(model=MODEL, messages=[user("hi")])

    # Then 1 + 1 attempts were made and the last error surfaced
    assert caught.value.body["message"] == "second"
    assert len(fake.requests) == 2
    assert fake.pending == 1


def test_retry_after_ms_is_honoured_in_real_time(fake: FakeCohere, client: cohere.ClientV2) -> None:
    # Given a 429 asking to wait 150 ms, then success
    fake.script(error_reply(429, headers={"retry-after-ms": "150"}), text_reply("ok"))

    # When the SDK calls with one retry allowed
    started = time.monotonic()
    response = client.chat(model=MODEL, messages=[user("hi")], request_options={"max_retries": 1})

    # Then it waited about 150 ms before retrying
    assert response.message.content[0].text == "ok"
    assert 0.14 <= time.monotonic() - started < TIMEOUT + 0.5
    assert len(fake.requests) == 2


def test_client_errors_are_not_retried(fake: FakeCohere, client: cohere.ClientV2) -> None:
    # Given a 400 followed by a reply that should never be requested
    fake.script(error_reply(400), text_reply("never"))

    # When the SDK calls with the default retries
    with pytest.raises(BadRequestError):
        client.chat(model=MODEL, messages=[user("hi")])

    # Then only one attempt was made
    assert len(fake.requests) == 1


def test_slow_reply_causes_httpx_read_timeout_without_retry(
    fake: FakeCohere, client: cohere.ClientV2
) -> None:
    # Given a reply slower than the client timeout
    fake.script(slow_reply(3, then=text_reply("too late")), text_reply("never"))

    # When the SDK calls with default retries
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.chat(model=MODEL, messages=[user("hi")])

    # Then the raw httpx timeout escapes after ~TIMEOUT and timeouts are not retried
    assert time.monotonic() - started < TIMEOUT + 0.5
    assert len(fake.requests) == 1
    assert fake.pending == 1


def test_per_request_timeout_overrides_client_timeout(
    fake: FakeCohere, client: cohere.ClientV2
) -> None:
    # Given a reply that takes 0.4 s
    fake.script(slow_reply(0.4, then=text_reply("ok")))

    # When the request timeout is lowered to 0.1 s
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        client.chat(model=MODEL, messages=[user("hi")], request_options={"timeout": 0.1})

    # Then it timed out early
    assert time.monotonic() - started < 0.35


def test_stop_does_not_wait_for_a_sleeping_handler() -> None:
    # Given a fake with a handler sleeping for a long time
    server = FakeCohere().start()
    server.script(slow_reply(30))
    client = cohere.ClientV2(api_key="test", base_url=server.base_url, timeout=0.2)
    with pytest.raises(httpx.ReadTimeout):
        client.chat(model=MODEL, messages=[user("hi")], request_options=NO_RETRIES)

    # When the fake is stopped
    started = time.monotonic()
    server.stop()

    # Then stop() returns promptly
    assert time.monotonic() - started < 2
