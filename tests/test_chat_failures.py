"""Chat turns that go wrong: Cohere fails or answers nonsense, or the model misuses the tools.

Upstream failures map to 429/502/504 and the conversation keeps the user's message and every tool
call already executed. Tool misuse is answered to the model with `{"error": ...}` and the turn goes
on to the model's final reply.
"""

import json
import time
from typing import Any

from tests.fakes.cohere_server import (
    FakeCohere,
    error_reply,
    raw_reply,
    slow_reply,
    text_reply,
    tool_calls_reply,
)
from tests.support.chat import (
    TOOL_NAMES,
    ChatUser,
    chat,
    chat_ok,
    clear_settings_and_client,
    fake_cohere_fixture,  # noqa: F401
    only_conversation_id,
    reconfigure,
    stored_messages,
    task_row,
    task_rows,
    tool_results,
    wire_call,
)

FAILED_TURN = "Add a task to buy groceries"


def assert_only_the_user_message_kept(api: Any, user: Any, message: str) -> None:
    conversation_id = only_conversation_id(api, user)
    [stored] = stored_messages(api, user, conversation_id)
    assert stored["role"] == "user"
    assert stored["content"] == message
    assert stored["tool_calls"] is None


# --- chat not configured --------------------------------------------------------------------------


def test_chat_without_a_cohere_key_is_503(chat_api, configure, user):
    for key in (None, "   "):
        # Given no usable Cohere key (unset, or blank)
        reconfigure(configure, CO_API_KEY=key)

        # When the user chats
        response = chat(chat_api, user, "Hello")

        # Then chat is unavailable, with the usual error shape
        assert response.status_code == 503, key
        assert "not configured" in response.json()["detail"]
    # And the conversation endpoints still work
    assert chat_api.get(f"/api/{user.id}/conversations", headers=user.headers).status_code == 200


# --- Cohere answers with an error -----------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after_when_known(chat_api, fake_cohere):
    # Given Cohere rate limits a call saying when to come back, then one without saying it
    fake_cohere.script(error_reply(429, headers={"Retry-After": "7"}), error_reply(429))
    told, untold = ChatUser(), ChatUser()

    # When two users chat
    with_header = chat(chat_api, told, FAILED_TURN)
    without_header = chat(chat_api, untold, FAILED_TURN)

    # Then the first is told to retry after the same delay, the second gets no made-up delay
    assert with_header.status_code == 429
    assert with_header.headers["retry-after"] == "7"
    assert "rate limited" in with_header.json()["detail"]
    assert without_header.status_code == 429
    assert "retry-after" not in without_header.headers
    # And the app did not retry by itself
    assert len(fake_cohere.requests) == 2
    # And both messages are kept
    assert_only_the_user_message_kept(chat_api, told, FAILED_TURN)
    assert_only_the_user_message_kept(chat_api, untold, FAILED_TURN)


UPSTREAM_ERRORS = (400, 401, 500, 502, 503)


def test_upstream_errors_are_502(chat_api, fake_cohere):
    # Given Cohere fails each call (and the 3 s budget leaves no room for a retry)
    outcomes = {}
    for status in UPSTREAM_ERRORS:
        fake_cohere.reset()
        fake_cohere.script(error_reply(status), text_reply("never sent"))
        user = ChatUser()

        # When a user chats
        response = chat(chat_api, user, FAILED_TURN)
        outcomes[status] = (response.status_code, response.json(), len(fake_cohere.requests))

        # Then the user's message is kept
        assert_only_the_user_message_kept(chat_api, user, FAILED_TURN)

    # Then each is a bad gateway after exactly one request, with no upstream details leaked
    failed = (502, {"detail": "The assistant service failed"}, 1)
    assert outcomes == dict.fromkeys(UPSTREAM_ERRORS, failed)


def test_a_transient_error_is_retried_once_when_the_budget_allows(
    chat_api, fake_cohere, configure, user
):
    # Given a budget with room for a retry, and Cohere failing once with a 503
    reconfigure(configure, CHAT_TURN_BUDGET_SECONDS="10")
    fake_cohere.script(error_reply(503), text_reply("Hello again."))

    # When the user chats
    body = chat_ok(chat_api, user, "Hello")

    # Then the second attempt answered, with the same request
    assert body["response"] == "Hello again."
    assert len(fake_cohere.requests) == 2
    assert fake_cohere.requests[0].json == fake_cohere.requests[1].json
    stored = stored_messages(chat_api, user, body["conversation_id"])
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Hello"),
        ("assistant", "Hello again."),
    ]

    # When Cohere then fails twice in a row
    fake_cohere.reset()
    fake_cohere.script(error_reply(500), error_reply(500), text_reply("never sent"))
    response = chat(chat_api, user, FAILED_TURN, body["conversation_id"])

    # Then the app gave up after one retry
    assert response.status_code == 502
    assert len(fake_cohere.requests) == 2


def test_client_errors_and_rate_limits_are_not_retried(chat_api, fake_cohere, configure, user):
    # Given a budget with room for a retry
    reconfigure(configure, CHAT_TURN_BUDGET_SECONDS="10")
    outcomes = {}
    for status in (400, 401, 429):
        # When Cohere answers a non-transient error
        fake_cohere.reset()
        fake_cohere.script(error_reply(status), text_reply("never sent"))
        response = chat(chat_api, user, FAILED_TURN)
        outcomes[status] = (response.status_code, len(fake_cohere.requests))

    # Then the error is reported after a single request
    assert outcomes == {400: (502, 1), 401: (502, 1), 429: (429, 1)}


def test_unreachable_cohere_is_502(chat_api, fake_cohere, monkeypatch, user):
    # Given Cohere's address refuses connections
    closed = FakeCohere().start()
    closed_url = closed.base_url
    closed.stop()
    monkeypatch.setenv("CO_API_URL", closed_url)
    clear_settings_and_client()

    # When the user chats
    response = chat(chat_api, user, FAILED_TURN)

    # Then it is a bad gateway, and the message is kept
    assert response.status_code == 502
    assert_only_the_user_message_kept(chat_api, user, FAILED_TURN)


# --- Cohere is too slow ---------------------------------------------------------------------------


def test_reply_slower_than_the_budget_is_504(chat_api, fake_cohere, monkeypatch, user):
    # Given a 1.25 s budget and a model that takes 2.5 s
    monkeypatch.setenv("CHAT_TURN_BUDGET_SECONDS", "1.25")
    clear_settings_and_client()
    fake_cohere.script(slow_reply(2.5, then=text_reply("too late")))

    # When the user chats
    started = time.monotonic()
    response = chat(chat_api, user, FAILED_TURN)
    elapsed = time.monotonic() - started

    # Then the app answered 504 within the budget instead of waiting for the model
    assert response.status_code == 504
    assert "too long" in response.json()["detail"]
    assert elapsed < 2.2
    assert len(fake_cohere.requests) == 1
    assert_only_the_user_message_kept(chat_api, user, FAILED_TURN)


def test_no_call_is_started_with_under_a_second_left(
    chat_api, fake_cohere, monkeypatch, user, database
):
    # Given a 1.25 s budget, and a model that takes 0.4 s to ask for add_task
    monkeypatch.setenv("CHAT_TURN_BUDGET_SECONDS", "1.25")
    clear_settings_and_client()
    fake_cohere.script(
        slow_reply(0.4, then=tool_calls_reply(("add_task", {"title": "Buy groceries"}))),
        text_reply("never requested"),
    )

    # When the user chats
    response = chat(chat_api, user, FAILED_TURN)

    # Then the app ran the tool but did not start a second call with under 1 s left
    assert response.status_code == 504
    assert len(fake_cohere.requests) == 1
    # And the task change and the executed call are kept
    [row] = task_rows(database, user.id)
    assert row["title"] == "Buy groceries"
    user_message, note = stored_messages(chat_api, user, only_conversation_id(chat_api, user))
    assert user_message["content"] == FAILED_TURN
    assert note["role"] == "assistant"
    assert note["content"]
    [call] = note["tool_calls"]
    assert call["name"] == "add_task"
    assert call["result"]["task_id"] == row["id"]


# --- Cohere answers 200 with something that is not a chat response --------------------------------

GARBAGE_BODIES = {
    "html": ("<html><body>502 Bad Gateway</body></html>", "text/html"),
    "truncated-json": ('{"id": "x", "message": {"role": "assist', "application/json"),
    "empty": ("", "application/json"),
    "no-message": ('{"weird": 1}', "application/json"),
    "json-null": ("null", "application/json"),
    "json-array": ("[1, 2]", "application/json"),
    "message-is-a-string": ('{"id": "x", "message": "hello"}', "application/json"),
    "tool-call-without-function": (
        '{"id": "x", "finish_reason": "TOOL_CALL", "message": {"role": "assistant", '
        '"tool_calls": [{"id": "call_1", "type": "function"}]}}',
        "application/json",
    ),
}


def test_garbage_200_is_502(chat_api, fake_cohere):
    statuses = {}
    for name, (content, content_type) in GARBAGE_BODIES.items():
        # Given Cohere answers 200 with a body that is no chat response
        fake_cohere.script(raw_reply(200, content, content_type=content_type))
        user = ChatUser()

        # When a user chats
        statuses[name] = chat(chat_api, user, FAILED_TURN).status_code

        # Then the message is kept
        assert_only_the_user_message_kept(chat_api, user, FAILED_TURN)

    # Then each is a bad gateway, not an internal error
    assert statuses == dict.fromkeys(GARBAGE_BODIES, 502)


# --- failures after a tool call already ran -------------------------------------------------------

FAILURES_AFTER_A_TOOL_CALL = {
    "server-error": (error_reply(500), 502),
    "rate-limited": (error_reply(429, headers={"Retry-After": "3"}), 429),
    "garbage": (raw_reply(200, "<html>oops</html>"), 502),
}


def test_failure_after_a_tool_call_keeps_the_call_and_its_effect(chat_api, fake_cohere, database):
    for name, (failure, status) in FAILURES_AFTER_A_TOOL_CALL.items():
        # Given a model that adds a task, then fails
        fake_cohere.reset()
        fake_cohere.script(
            tool_calls_reply(("add_task", {"title": "Buy groceries"}, "add_task_kept00001")),
            failure,
        )
        user = ChatUser()

        # When a user chats
        response = chat(chat_api, user, FAILED_TURN)

        # Then the failure is reported
        assert response.status_code == status, name
        if status == 429:
            assert response.headers["retry-after"] == "3"
        assert len(fake_cohere.requests) == 2
        # And the task was really created
        [row] = task_rows(database, user.id)
        assert row["title"] == "Buy groceries"
        # And the conversation keeps the message and the executed call with its result
        conversation_id = only_conversation_id(chat_api, user)
        user_message, assistant = stored_messages(chat_api, user, conversation_id)
        assert (user_message["role"], user_message["content"]) == ("user", FAILED_TURN)
        assert assistant["role"] == "assistant"
        assert assistant["content"]
        [call] = assistant["tool_calls"]
        assert call["name"] == "add_task"
        assert call["arguments"] == {"title": "Buy groceries"}
        assert call["result"]["status"] == "created"
        assert call["result"]["task_id"] == row["id"]
        # (which is what the model was sent as the result of that call)
        assert tool_results(fake_cohere.requests[1]) == {"add_task_kept00001": call["result"]}


def test_next_turn_replays_the_calls_of_a_failed_turn(chat_api, fake_cohere, user):
    # Given a turn that added a task and then failed
    fake_cohere.script(
        tool_calls_reply(
            ("add_task", {"title": "Buy groceries"}, "add_task_replay001"),
            tool_plan="I will add the task.",
        ),
        error_reply(500),
        text_reply("Yes, 'Buy groceries' is on your list."),
    )
    assert chat(chat_api, user, FAILED_TURN).status_code == 502
    conversation_id = only_conversation_id(chat_api, user)
    note = stored_messages(chat_api, user, conversation_id)[1]

    # When the user continues the conversation
    body = chat_ok(chat_api, user, "Did that work?", conversation_id)

    # Then the model sees the first message, the executed call, its result and the stored note
    assert body["conversation_id"] == conversation_id
    messages = fake_cohere.requests[2].messages
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert messages[1] == {"role": "user", "content": FAILED_TURN}
    assert messages[2]["tool_plan"] == "I will add the task."
    assert wire_call(messages[2]) == ("add_task_replay001", "add_task", {"title": "Buy groceries"})
    assert messages[3]["tool_call_id"] == "add_task_replay001"
    assert json.loads(messages[3]["content"]) == note["tool_calls"][0]["result"]
    assert messages[4] == {"role": "assistant", "content": note["content"]}
    assert messages[5] == {"role": "user", "content": "Did that work?"}


# --- the model misuses the tools: the turn goes on ------------------------------------------------


def run_calls(api: Any, fake: Any, user: Any, calls: list[tuple[str, Any]]) -> dict[str, Any]:
    """One turn in which the model makes `calls` at once, then says "Done."; returns the body."""
    ids = [f"{name}_{index:012d}" for index, (name, _) in enumerate(calls)]
    fake.script(
        tool_calls_reply(
            *[(name, args, id_) for (name, args), id_ in zip(calls, ids, strict=True)]
        ),
        text_reply("Done."),
    )
    body = chat_ok(api, user, "Do these things")
    # The model got one result per call, under the call's id, in order
    assert len(body["tool_calls"]) == len(calls)
    sent = tool_results(fake.requests[-1])
    assert list(sent) == ids
    assert list(sent.values()) == [call["result"] for call in body["tool_calls"]]
    # And the turn went on to the model's reply
    assert body["response"] == "Done."
    return body


def error_results(body: dict[str, Any]) -> list[str]:
    errors = []
    for call in body["tool_calls"]:
        result = call["result"]
        assert set(result) == {"error"}, call
        assert isinstance(result["error"], str)
        assert result["error"]
        errors.append(result["error"])
    return errors


def test_unknown_tool_is_an_error_result(chat_api, fake_cohere, user):
    # Given a model that calls a tool that does not exist
    # When the user asks
    body = run_calls(chat_api, fake_cohere, user, [("send_email", {"to": "boss@example.com"})])

    # Then the call is reported as made, with an error result naming the real tools
    [call] = body["tool_calls"]
    assert call["name"] == "send_email"
    assert call["arguments"] == {"to": "boss@example.com"}
    [error] = error_results(body)
    assert "send_email" in error
    assert all(name in error for name in TOOL_NAMES)


MALFORMED_ARGUMENTS = ['{"title": "Buy milk"', '["Buy milk"]', "Buy milk", '"Buy milk"']


def test_malformed_arguments_are_an_error_result(chat_api, fake_cohere, user, database):
    # Given a model whose arguments are not a JSON object (truncated, array, not JSON, string)
    # When the user asks
    body = run_calls(
        chat_api, fake_cohere, user, [("add_task", raw) for raw in MALFORMED_ARGUMENTS]
    )

    # Then each call got an error result and nothing was created
    assert all("JSON object" in error for error in error_results(body))
    assert all(isinstance(call["arguments"], dict) for call in body["tool_calls"])
    assert task_rows(database, user.id) == []
    # And the raw arguments went back to the model as the model sent them
    sent = fake_cohere.requests[1].messages[2]["tool_calls"]
    assert [call["function"]["arguments"] for call in sent] == MALFORMED_ARGUMENTS


def test_missing_required_arguments_are_an_error_result(chat_api, fake_cohere, user, database):
    # Given a model that leaves out required arguments (null counts as left out)
    calls = [
        ("add_task", {}),
        ("add_task", {"title": None}),
        ("complete_task", {}),
        ("delete_task", {}),
        ("update_task", {"title": "New title"}),
    ]

    # When the user asks
    body = run_calls(chat_api, fake_cohere, user, calls)

    # Then each error names the missing argument and nothing changed
    errors = error_results(body)
    missing = ["title", "title", "task_id", "task_id", "task_id"]
    assert all(name in error for name, error in zip(missing, errors, strict=True)), errors
    assert task_rows(database, user.id) == []


def test_invalid_arguments_are_an_error_result(chat_api, fake_cohere, user, other_user, database):
    # Given a model that sends invalid values, or tries to act for somebody else
    calls = [
        ("add_task", {"title": "x", "priority": "urgent"}),
        ("add_task", {"title": "x" * 201}),
        ("add_task", {"title": "   "}),
        ("add_task", {"title": "x", "due_date": "next friday"}),
        ("add_task", {"title": "x", "tags": [f"t{i}" for i in range(11)]}),
        ("add_task", {"title": "Injected", "user_id": other_user.id}),
        ("list_tasks", {"limit": 500}),
        ("list_tasks", {"status": "archived"}),
        ("list_tasks", {"user_id": other_user.id}),
        ("complete_task", {"task_id": "three"}),
        ("complete_task", {"task_id": 0}),
        ("delete_task", {"task_id": 2**70}),
        ("update_task", {"task_id": 1, "priority": "urgent"}),
    ]

    # When the user asks
    body = run_calls(chat_api, fake_cohere, user, calls)

    # Then every call got an error result and no task exists for either user
    errors = error_results(body)
    assert all(error.startswith("invalid arguments") for error in errors), errors
    assert "user_id" in errors[5]
    assert task_rows(database, user.id) == []
    assert task_rows(database, other_user.id) == []


TASK_ID_TOOLS = [
    ("complete_task", {}),
    ("delete_task", {}),
    ("update_task", {"title": "Hijacked"}),
]


def test_task_that_does_not_exist_is_an_error_result(chat_api, fake_cohere, user):
    # Given a model that uses an id that no task has
    missing_id = 2**62
    calls = [(name, {"task_id": missing_id, **extra}) for name, extra in TASK_ID_TOOLS]

    # When the user asks
    body = run_calls(chat_api, fake_cohere, user, calls)

    # Then the model is told it does not exist
    for error in error_results(body):
        assert "not found" in error
        assert str(missing_id) in error


def test_another_users_task_is_not_found_and_untouched(
    chat_api, fake_cohere, user, other_user, task_factory, database
):
    # Given a task of another user, and a model that uses its id (and, to compare, a free id)
    theirs = task_factory(other_user, "Their secret task", priority="high", tags=["private"])
    before = task_row(database, theirs.id)
    free_id = 2**62
    calls = []
    for name, extra in TASK_ID_TOOLS:
        calls += [(name, {"task_id": theirs.id, **extra}), (name, {"task_id": free_id, **extra})]

    # When the user asks
    body = run_calls(chat_api, fake_cohere, user, calls)

    # Then each looks exactly like a task that does not exist
    errors = error_results(body)
    for theirs_error, free_error in zip(errors[::2], errors[1::2], strict=True):
        assert theirs_error == free_error.replace(str(free_id), str(theirs.id))
    assert "Their secret task" not in json.dumps(body)
    # And the other user's task is untouched
    assert task_row(database, theirs.id) == before


def test_failed_calls_do_not_stop_the_good_ones(chat_api, fake_cohere, user, database):
    # Given one response mixing bad calls and a good one
    calls = [
        ("add_task", "{not json"),
        ("no_such_tool", {}),
        ("add_task", {"title": "Good one"}),
        ("complete_task", {"task_id": 2**62}),
    ]

    # When the user asks
    body = run_calls(chat_api, fake_cohere, user, calls)

    # Then every call has its own result, in order, and the good one took effect
    results = [call["result"] for call in body["tool_calls"]]
    assert [("error" in result) for result in results] == [True, True, False, True]
    [row] = task_rows(database, user.id)
    assert row["title"] == "Good one"
    assert results[2]["task_id"] == row["id"]


def test_nul_characters_from_the_model_do_not_break_the_turn(chat_api, fake_cohere, user, database):
    # Given a model that sends a NUL character in a tool argument and in its reply, and also
    # makes a good call
    fake_cohere.script(
        tool_calls_reply(
            ("add_task", {"title": "Good one"}),
            ("add_task", {"title": "x", "description": "bad\x00byte"}),
        ),
        text_reply("Added 'Good one'.\x00"),
    )

    # When the user asks
    response = chat(chat_api, user, "Add good one")

    # Then the turn succeeds: the bad argument was refused to the model, the good call ran
    assert response.status_code == 200, response.text
    good, bad = response.json()["tool_calls"]
    assert good["result"]["status"] == "created"
    assert "control characters" in bad["result"]["error"]
    assert [row["title"] for row in task_rows(database, user.id)] == ["Good one"]
    # And the conversation keeps the reply with both calls
    stored = stored_messages(chat_api, user, response.json()["conversation_id"])
    assert [message["role"] for message in stored] == ["user", "assistant"]
    assert [call["name"] for call in stored[1]["tool_calls"]] == ["add_task", "add_task"]


def test_tool_call_without_an_id_is_answered_under_the_same_id(
    chat_api, fake_cohere, user, database
):
    # Given a model whose tool call carries no id (the SDK does not invent one for responses)
    call = {"type": "function", "function": {"name": "add_task", "arguments": '{"title": "No id"}'}}
    reply = {
        "id": "response-1",
        "finish_reason": "TOOL_CALL",
        "message": {"role": "assistant", "tool_plan": "I will add it.", "tool_calls": [call]},
    }
    fake_cohere.script(
        raw_reply(200, json.dumps(reply), content_type="application/json"),
        text_reply("Added 'No id'."),
    )

    # When the user asks
    response = chat(chat_api, user, "Add no id")

    # Then the turn completes: the tool result answers the call as the app sent it back
    assert response.status_code == 200, response.text
    assert len(task_rows(database, user.id)) == 1
    second = fake_cohere.requests[1]
    call_id = second.messages[2]["tool_calls"][0]["id"]
    assert isinstance(call_id, str)
    assert call_id
    assert list(tool_results(second)) == [call_id]
