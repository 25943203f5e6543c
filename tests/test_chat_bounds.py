"""Chat you can leave running: bounded turns, responses and history; idempotent turns; quotas.

Regression tests of the adversarial scenarios: a reply of 3,000 tool calls, one of 100 large
listings, deeply nested arguments; plus the Idempotency-Key, the daily quotas and the usage route.
Heavy scenarios run through the Lambda handler only; the others through both clients.
"""

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fakes.cohere_server import error_reply, slow_reply, text_reply, tool_calls_reply
from tests.support.chat import (
    ChatUser,
    chat,
    chat_ok,
    clear_settings_and_client,
    fake_cohere_fixture,  # noqa: F401
    in_thread,
    stored_messages,
    task_rows,
    tool_results,
    usage_row_locked,
)
from tests.support.lambda_events import LambdaClient


@pytest.fixture
def lambda_chat() -> LambdaClient:
    from functions.chat.app import handler

    return LambdaClient(handler)


def settings(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    clear_settings_and_client()


def keyed(api: Any, user: Any, message: str, key: str, conversation_id: str | None = None) -> Any:
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    return api.post(
        f"/api/{user.id}/chat", json=body, headers={**user.headers, "Idempotency-Key": key}
    )


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- tool calls are capped, and the deadline is checked before each -------------------------------


def test_a_reply_of_3000_tool_calls_runs_only_the_allowed_ones(lambda_chat, fake_cohere, database):
    # Given a model that asks for 3,000 add_task calls in one reply
    user = ChatUser()
    fake_cohere.script(
        tool_calls_reply(*[("add_task", {"title": f"Spam {n}"}) for n in range(3000)]),
        text_reply("I added the first twenty."),
    )

    # When the user chats (budget: 3 s)
    started = time.monotonic()
    response = chat(lambda_chat, user, "Add lots")
    elapsed = time.monotonic() - started

    # Then the turn answers within its budget, having run CHAT_MAX_TOOL_CALLS (20) calls
    assert response.status_code == 200, response.text
    assert elapsed < 3
    body = response.json()
    assert len(task_rows(database, user.id)) == 20
    # ... and the model was told, in one answer, that the rest did not run
    results = tool_results(fake_cohere.requests[1])
    assert len(results) == 21
    refused = list(results.values())[-1]
    assert "at most 20 tool calls" in refused["error"]
    assert "2979 more" in refused["error"]
    assert len(fake_cohere.requests[1].body) < 50_000
    # And the response and the conversation show the 20 calls and the refusal, no more
    assert len(body["tool_calls"]) == 21
    stored = stored_messages(lambda_chat, user, body["conversation_id"])
    assert len(stored[-1]["tool_calls"]) == 21


def test_the_tool_call_limit_is_configurable_and_counts_every_step(
    lambda_chat, fake_cohere, monkeypatch, database
):
    # Given at most 3 tool calls per turn, and a model that asks for 2 in each of two steps
    settings(monkeypatch, CHAT_MAX_TOOL_CALLS="3")
    user = ChatUser()
    fake_cohere.script(
        tool_calls_reply(("add_task", {"title": "One"}), ("add_task", {"title": "Two"})),
        tool_calls_reply(("add_task", {"title": "Three"}), ("add_task", {"title": "Four"})),
        text_reply("Done."),
    )

    # When the user chats
    body = chat_ok(lambda_chat, user, "Add four")

    # Then three ran, the fourth was refused
    assert [row["title"] for row in task_rows(database, user.id)] == ["One", "Two", "Three"]
    assert "error" in body["tool_calls"][3]["result"]


def test_no_tool_runs_once_the_budget_is_nearly_spent(
    lambda_chat, fake_cohere, monkeypatch, database
):
    # Given a 1.5 s budget, and a model that takes 1.1 s to ask for 100 tool calls (all allowed)
    settings(monkeypatch, CHAT_TURN_BUDGET_SECONDS="1.5", CHAT_MAX_TOOL_CALLS="100")
    user = ChatUser()
    fake_cohere.script(
        slow_reply(
            1.1, then=tool_calls_reply(*[("add_task", {"title": f"T{n}"}) for n in range(100)])
        ),
        text_reply("never requested"),
    )

    # When the user chats
    started = time.monotonic()
    response = chat(lambda_chat, user, "Add a hundred")
    elapsed = time.monotonic() - started

    # Then, with under half a second left, no tool ran and no further model call started
    assert response.status_code == 504
    assert elapsed < 1.5
    assert len(fake_cohere.requests) == 1
    assert task_rows(database, user.id) == []
    # And the conversation shows why each call did not run
    conversation = lambda_chat.get(f"/api/{user.id}/conversations", headers=user.headers).json()
    messages = stored_messages(lambda_chat, user, conversation["items"][0]["id"])
    calls = messages[-1]["tool_calls"]
    assert len(calls) == 100
    assert {call["result"]["error"] for call in calls} == {"not run: the turn ran out of time"}


# --- tool results, replayed history and the message list are bounded ------------------------------


def test_100_large_listings_stay_bounded_now_and_in_later_turns(
    lambda_chat, fake_cohere, task_factory, database
):
    # Given a user with 60 tasks with long descriptions
    user = ChatUser()
    for n in range(60):
        task_factory(user, f"Task {n}", description="x" * 1000)
    # ... and a model that lists them 100 times in one reply
    fake_cohere.script(
        tool_calls_reply(*[("list_tasks", {"limit": 50}) for _ in range(100)]),
        text_reply("That is a lot of tasks."),
        text_reply("Still there."),
    )

    # When the user chats, then continues the conversation
    first = chat_ok(lambda_chat, user, "List everything, a lot")
    chat_ok(lambda_chat, user, "And now?", first["conversation_id"])

    # Then each result sent to the model was at most 8 KiB, lists cut short and marked
    results = tool_results(fake_cohere.requests[1])
    assert len(results) == 21
    for result in list(results.values())[:20]:
        assert len(json.dumps(result).encode()) <= 8 * 1024
        assert result["truncated"] is True
        assert result["total"] == 60
        assert 0 < len(result["tasks"]) < 50
    # And the next turn replays a bounded history (CHAT_HISTORY_MAX_CHARS, default 24000)
    later = fake_cohere.requests[2]
    history = later.messages[1:-1]
    assert sum(len(json.dumps(message)) for message in history) <= 24_000 + 2_000
    assert history[0] == {"role": "user", "content": "List everything, a lot"}
    assert later.messages[-1] == {"role": "user", "content": "And now?"}
    assert len(later.body) < 40_000
    # And the conversation's messages stay readable and bounded
    response = lambda_chat.get(
        f"/api/{user.id}/conversations/{first['conversation_id']}/messages", headers=user.headers
    )
    assert response.status_code == 200
    assert len(response.text) < 500_000


def test_history_is_bounded_by_characters_dropping_the_oldest_turns(
    chat_api, fake_cohere, monkeypatch
):
    # Given a history budget of 2000 characters, and five turns of about 600 characters each
    settings(monkeypatch, CHAT_HISTORY_MAX_CHARS="2000")
    user = ChatUser()
    fake_cohere.script(*[text_reply(f"Reply {n} " + "r" * 290) for n in range(6)])
    conversation_id = None
    for n in range(5):
        body = chat_ok(chat_api, user, f"Message {n} " + "m" * 290, conversation_id)
        conversation_id = body["conversation_id"]

    # When the user sends a sixth message
    chat_ok(chat_api, user, "Last one", conversation_id)

    # Then only the newest turns are replayed, within the budget, starting with a user message
    history = fake_cohere.requests[-1].messages[1:-1]
    assert sum(len(message["content"]) for message in history) <= 2000
    assert history[0]["role"] == "user"
    assert history[-1]["content"].startswith("Reply 4")
    assert len(history) < 10


@pytest.mark.parametrize("depth", [400, 5000])
def test_deeply_nested_arguments_are_a_tool_error_not_a_500(
    lambda_chat, fake_cohere, database, depth
):
    # Given a model that sends arguments nested `depth` levels deep
    user = ChatUser()
    raw = '{"title": ' + nested(depth) + "}"
    fake_cohere.script(
        tool_calls_reply(("add_task", raw, "add_task_deep00001")),
        text_reply("That did not work."),
        text_reply("Fine."),
    )

    # When the user chats
    body = chat_ok(lambda_chat, user, "Add something strange")

    # Then the call is an error to the model, nothing is created, nothing deep is stored
    [call] = body["tool_calls"]
    assert "error" in call["result"]
    assert "nested deeper" in call["result"]["error"] or "larger than" in call["result"]["error"]
    assert "error" in tool_results(fake_cohere.requests[1])["add_task_deep00001"]
    assert set(call["arguments"]) == {"omitted"}
    assert task_rows(database, user.id) == []
    # And the conversation stays readable, and continues
    stored = stored_messages(lambda_chat, user, body["conversation_id"])
    assert stored[-1]["tool_calls"][0]["arguments"] == call["arguments"]
    chat_ok(lambda_chat, user, "Ok", body["conversation_id"])


def test_messages_are_paginated(chat_api, fake_cohere):
    # Given a conversation of three turns (six messages)
    user = ChatUser()
    fake_cohere.script(*[text_reply(f"Reply {n}") for n in range(3)])
    conversation_id = None
    for n in range(3):
        conversation_id = chat_ok(chat_api, user, f"Message {n}", conversation_id)[
            "conversation_id"
        ]
    url = f"/api/{user.id}/conversations/{conversation_id}/messages"

    def page(**params: Any) -> dict[str, Any]:
        response = chat_api.get(url, params=params, headers=user.headers)
        assert response.status_code == 200, response.text
        return response.json()

    # When the user reads pages of two
    first, middle, last, beyond = (page(limit=2, offset=o) for o in (0, 2, 4, 6))

    # Then each page has its items, oldest first, with the total, limit and offset
    contents = [m["content"] for p in (first, middle, last) for m in p["items"]]
    assert contents == [
        "Message 0",
        "Reply 0",
        "Message 1",
        "Reply 1",
        "Message 2",
        "Reply 2",
    ]
    assert (first["total"], first["limit"], first["offset"]) == (6, 2, 0)
    assert beyond == {"items": [], "total": 6, "limit": 2, "offset": 6}
    # And the default page is 50 messages; a bad limit or offset is a 422
    assert page()["limit"] == 50
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
        assert chat_api.get(url, params=params, headers=user.headers).status_code == 422


def test_a_page_of_messages_stops_before_two_megabytes(chat_api, fake_cohere, database):
    from sqlalchemy import text

    from todo_backend.chat.conversations import MESSAGE_PAGE_MAX_BYTES

    # Given a conversation whose 40 stored assistant messages each carry ~200 KB of tool results
    user = ChatUser()
    fake_cohere.script(text_reply("Hi"))
    conversation_id = chat_ok(chat_api, user, "Hello")["conversation_id"]
    big_call = [{"id": "c", "name": "list_tasks", "arguments": {}, "result": {"x": "y" * 200_000}}]
    for _ in range(40):
        database.fetch_one(
            text(
                "INSERT INTO messages (conversation_id, role, content, tool_calls) "
                "VALUES (:id, 'assistant', 'listed', CAST(:calls AS jsonb)) RETURNING id"
            ).bindparams(id=uuid.UUID(conversation_id), calls=json.dumps(big_call))
        )
    url = f"/api/{user.id}/conversations/{conversation_id}/messages"

    # When the user asks for a page of 100 (about 8 MB if it were all sent)
    response = chat_api.get(url, params={"limit": 100}, headers=user.headers)

    # Then the page stops early: under the byte bound, at least one item, the right total
    assert response.status_code == 200, response.text
    assert len(response.text.encode()) <= MESSAGE_PAGE_MAX_BYTES + 64 * 1024
    body = response.json()
    assert 1 <= len(body["items"]) < 42
    assert body["total"] == 42
    # And the next page, from where this one stopped, goes on
    following = chat_api.get(
        url, params={"limit": 100, "offset": len(body["items"])}, headers=user.headers
    ).json()
    assert following["items"]
    assert following["items"][0]["id"] not in {item["id"] for item in body["items"]}


# --- Idempotency-Key ------------------------------------------------------------------------------


def test_a_repeat_with_the_same_key_returns_the_first_response_without_the_model(
    chat_api, fake_cohere, database
):
    # Given a turn that added a task, sent with an idempotency key
    user = ChatUser()
    fake_cohere.script(
        tool_calls_reply(("add_task", {"title": "Once"})), text_reply("Added 'Once'.")
    )
    first = keyed(chat_api, user, "Add once", "key-1")
    assert first.status_code == 200, first.text
    requests = len(fake_cohere.requests)

    # When the client sends it again with the same key
    again = keyed(chat_api, user, "Add once", "key-1")

    # Then the stored response comes back; no model call, no tool call, no new message
    assert again.status_code == 200
    assert again.json() == first.json()
    assert len(fake_cohere.requests) == requests
    assert len(task_rows(database, user.id)) == 1
    assert len(stored_messages(chat_api, user, first.json()["conversation_id"])) == 2
    # And the same key for another request is a 422; another user's key is theirs alone
    reused = keyed(chat_api, user, "Add twice", "key-1")
    assert reused.status_code == 422
    assert reused.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    other = ChatUser()
    fake_cohere.script(text_reply("Hello."))
    assert keyed(chat_api, other, "Add once", "key-1").json()["response"] == "Hello."
    # And a key must be 1-255 characters
    assert keyed(chat_api, user, "Add once", "k" * 256).status_code == 422


def test_a_repeat_while_the_first_runs_is_409(lambda_chat, fake_cohere, configure):
    # Given a turn whose model takes a second to answer, and room for two connections
    configure(DB_POOL_SIZE="2")
    user = ChatUser()
    fake_cohere.script(slow_reply(1.0, then=text_reply("Slow answer.")))
    thread, outcome = in_thread(lambda: keyed(lambda_chat, user, "Hello", "key-slow"))
    deadline = time.monotonic() + 5
    while not fake_cohere.requests and time.monotonic() < deadline:
        time.sleep(0.02)

    # When the client repeats it meanwhile
    busy = keyed(lambda_chat, user, "Hello", "key-slow")

    # Then that is a 409 with Retry-After, and the model was called once
    assert busy.status_code == 409, busy.text
    assert 1 <= int(busy.headers["retry-after"]) <= 3
    thread.join()
    assert outcome["value"].status_code == 200
    assert len(fake_cohere.requests) == 1
    # And once the first is done, a repeat returns its response
    assert keyed(lambda_chat, user, "Hello", "key-slow").json() == outcome["value"].json()


# --- daily quotas and usage -----------------------------------------------------------------------


def seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (midnight - now).total_seconds()


def test_over_the_daily_turn_quota_is_429_before_the_model(chat_api, fake_cohere, monkeypatch):
    # Given two turns a day, both used
    settings(monkeypatch, CHAT_DAILY_TURNS="2")
    user = ChatUser()
    fake_cohere.script(text_reply("One."), text_reply("Two."))
    conversation_id = chat_ok(chat_api, user, "One")["conversation_id"]
    chat_ok(chat_api, user, "Two", conversation_id)

    # When the user sends a third message
    response = chat(chat_api, user, "Three", conversation_id)

    # Then it is a 429 with Retry-After up to the next UTC midnight, and Cohere was not called
    assert response.status_code == 429, response.text
    assert abs(int(response.headers["retry-after"]) - seconds_to_utc_midnight()) < 5
    assert len(fake_cohere.requests) == 2
    # And the message was not stored
    assert [m["content"] for m in stored_messages(chat_api, user, conversation_id)] == [
        "One",
        "One.",
        "Two",
        "Two.",
    ]
    # And the usage says so
    usage = chat_api.get(f"/api/{user.id}/chat/usage", headers=user.headers).json()
    assert usage["turns"] == 2 and usage["turn_limit"] == 2


def test_a_resumed_turn_counts_against_the_quota_and_a_replay_does_not(
    chat_api, fake_cohere, monkeypatch
):
    # Given two turns a day, and a turn that failed at Cohere (one turn used)
    settings(monkeypatch, CHAT_DAILY_TURNS="2")
    user = ChatUser()
    fake_cohere.script(error_reply(400))
    assert keyed(chat_api, user, "Hello", "key-resumed").status_code == 502

    # When the client retries it with its key, and repeats it once it succeeded
    fake_cohere.script(text_reply("Hello."))
    resumed = keyed(chat_api, user, "Hello", "key-resumed")
    assert resumed.status_code == 200, resumed.text
    assert keyed(chat_api, user, "Hello", "key-resumed").json() == resumed.json()

    # Then the resumed attempt used the second turn, the replay none
    usage = chat_api.get(f"/api/{user.id}/chat/usage", headers=user.headers).json()
    assert usage["turns"] == 2
    # And a new turn is over the quota, before the model
    assert chat(chat_api, user, "Another").status_code == 429
    assert len(fake_cohere.requests) == 2


def test_billed_tokens_count_against_the_daily_token_quota(
    lambda_chat, fake_cohere, monkeypatch, capsys
):
    # Given 500 tokens a day, and a turn billed 450 + 120 tokens over two model calls
    settings(monkeypatch, CHAT_DAILY_TOKENS="500")
    user = ChatUser()
    billed = {"billed_units": {"input_tokens": 200, "output_tokens": 20}}
    fake_cohere.script(
        tool_calls_reply(("list_tasks", {}), usage=billed),
        text_reply(
            "Nothing yet.", usage={"billed_units": {"input_tokens": 250, "output_tokens": 100}}
        ),
    )
    chat_ok(lambda_chat, user, "What do I have?")

    # Then the usage counts the billed tokens, and the tokens are an EMF metric
    usage = lambda_chat.get(f"/api/{user.id}/chat/usage", headers=user.headers).json()
    assert usage == {
        "day": datetime.now(UTC).date().isoformat(),
        "turns": 1,
        "turn_limit": 100,
        "tokens": 570,
        "token_limit": 500,
    }
    metrics = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    assert any(line.get("CohereTokens") == [570.0] for line in metrics)

    # When the user chats again
    response = chat(lambda_chat, user, "And now?")

    # Then the quota is used up: 429 before Cohere is called
    assert response.status_code == 429
    assert len(fake_cohere.requests) == 2


def test_concurrent_turns_run_one_at_a_time_and_never_exceed_the_quota(
    lambda_chat, fake_cohere, configure
):
    # Given three turns a day, and six turns sent at once over six connections (a cold start:
    # the pool size is read when the engine is built), each claim starting (and taking its
    # snapshot) before any can finish, and a model that takes a moment to answer
    configure(CHAT_DAILY_TURNS="3", DB_POOL_SIZE="6")
    user = ChatUser()
    fake_cohere.script(*[slow_reply(0.5, then=text_reply("Hi.")) for _ in range(6)])
    with usage_row_locked(os.environ["DATABASE_URL"], user.id, waiters=6):
        started = [in_thread(lambda n=n: chat(lambda_chat, user, f"Hi {n}")) for n in range(6)]
    for thread, _ in started:
        thread.join()

    # Then one ran, and the five others were told that another turn is running
    statuses = sorted(outcome["value"].status_code for _, outcome in started)
    assert statuses == [200, 429, 429, 429, 429, 429], statuses
    assert len(fake_cohere.requests) == 1
    usage = lambda_chat.get(f"/api/{user.id}/chat/usage", headers=user.headers).json()
    assert usage["turns"] == 1
    # And one after another, two more run and the next is over the quota
    fake_cohere.script(text_reply("Two."), text_reply("Three."))
    assert chat(lambda_chat, user, "Two").status_code == 200
    assert chat(lambda_chat, user, "Three").status_code == 200
    assert chat(lambda_chat, user, "Four").status_code == 429
    assert len(fake_cohere.requests) == 3


def test_concurrent_repeats_of_one_turn_run_and_count_it_once(lambda_chat, fake_cohere, configure):
    # Given six requests with one key, sent over six connections while the user's usage row is
    # locked, so that each claim starts (and takes its snapshot) before any of them can finish
    configure(DB_POOL_SIZE="6")
    user = ChatUser()
    fake_cohere.script(text_reply("Once."))
    with usage_row_locked(os.environ["DATABASE_URL"], user.id, waiters=6):
        started = [
            in_thread(lambda: keyed(lambda_chat, user, "Hello", "key-at-once")) for _ in range(6)
        ]
    for thread, _ in started:
        thread.join()

    # Then one ran, the others were told it is running, and the quota counts one turn
    statuses = sorted(outcome["value"].status_code for _, outcome in started)
    assert statuses == [200, 409, 409, 409, 409, 409], statuses
    assert len(fake_cohere.requests) == 1
    usage = lambda_chat.get(f"/api/{user.id}/chat/usage", headers=user.headers).json()
    assert usage["turns"] == 1


def test_a_new_user_has_no_usage(chat_api, other_user):
    usage = chat_api.get(f"/api/{other_user.id}/chat/usage", headers=other_user.headers)
    assert usage.status_code == 200
    assert usage.json() == {
        "day": datetime.now(UTC).date().isoformat(),
        "turns": 0,
        "turn_limit": 100,
        "tokens": 0,
        "token_limit": 200_000,
    }
    someone = ChatUser()
    assert (
        chat_api.get(f"/api/{someone.id}/chat/usage", headers=other_user.headers).status_code == 403
    )


def test_a_conversation_of_another_user_is_404_and_counts_nothing(chat_api, fake_cohere):
    owner, intruder = ChatUser(), ChatUser()
    fake_cohere.script(text_reply("Mine."))
    conversation_id = chat_ok(chat_api, owner, "Mine")["conversation_id"]
    response = keyed(chat_api, intruder, "Yours?", str(uuid.uuid4()), conversation_id)
    assert response.status_code == 404
    usage = chat_api.get(f"/api/{intruder.id}/chat/usage", headers=intruder.headers).json()
    assert usage["turns"] == 0
