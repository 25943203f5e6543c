"""Chat turns that go well: the model calls the task tools, the app runs them for the user.

Each scenario runs through TestClient and through the Lambda handler (payload 2.0 events); the app
calls a local FakeCohere through the real SDK. Tests assert on what the SDK sent, on the response
and on the database afterwards.
"""

import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.fakes.cohere_server import slow_reply, text_reply, tool_calls_reply
from tests.support.chat import (
    TEST_API_KEY,
    TOOL_NAMES,
    chat_ok,
    clear_settings_and_client,
    fake_cohere_fixture,  # noqa: F401
    in_thread,
    is_uuid,
    reconfigure,
    stored_messages,
    task_row,
    task_rows,
    tool_results,
    utc_dates_around,
    wire_call,
)
from tests.support.database import admin_connection


def listed_ids(result: dict[str, Any]) -> list[int]:
    return [task["task_id"] for task in result["tasks"]]


# --- what the first request to Cohere carries -----------------------------------------------------


def test_first_request_sends_system_prompt_tools_and_the_message(chat_api, fake_cohere, user):
    # Given a model that answers with plain text
    fake_cohere.script(text_reply("Hello! How can I help with your tasks?"))

    # When the user says hello
    body, today = utc_dates_around(lambda: chat_ok(chat_api, user, "Hello there"))

    # Then one request went to /v2/chat with the default model, the key and no streaming
    assert len(fake_cohere.requests) == 1
    request = fake_cohere.requests[0]
    assert request.method == "POST"
    assert request.path == "/v2/chat"
    assert request.model == "command-a-03-2025"
    assert request.header("authorization") == f"Bearer {TEST_API_KEY}"
    assert request.json["stream"] is False
    # ... in strict mode: the model's arguments follow the schemas
    assert request.json["strict_tools"] is True
    # ... a system prompt naming today's UTC date, then the user's message
    system, message = request.messages
    assert system["role"] == "system"
    assert any(day in system["content"] for day in today)
    assert "(UTC)" in system["content"]
    assert message == {"role": "user", "content": "Hello there"}
    # ... and the task tools as Cohere v2 function tools, none taking a user id
    assert sorted(request.tool_names) == sorted(TOOL_NAMES)
    required = {}
    for tool in request.tools:
        assert tool["type"] == "function"
        parameters = tool["function"]["parameters"]
        assert parameters["type"] == "object"
        assert "user_id" not in parameters["properties"]
        assert tool["function"]["description"]
        required[tool["function"]["name"]] = parameters["required"]
    assert required == {
        "add_task": ["title"],
        "list_tasks": ["status"],
        "complete_task": ["task_id"],
        "delete_task": ["task_id"],
        "update_task": ["task_id"],
        "get_stats": ["scope"],
    }
    # And the model's text is the response, with no tool calls
    assert body["response"] == "Hello! How can I help with your tasks?"
    assert body["tool_calls"] == []
    fake_cohere.assert_all_consumed()


def test_configured_model_is_the_one_requested(chat_api, fake_cohere, monkeypatch, user):
    # Given COHERE_MODEL names another model
    monkeypatch.setenv("COHERE_MODEL", "command-r7b-12-2024")
    clear_settings_and_client()
    fake_cohere.script(text_reply("Hi."))

    # When the user chats
    chat_ok(chat_api, user, "Hi")

    # Then that model was asked
    assert fake_cohere.requests[0].model == "command-r7b-12-2024"


def test_response_body_has_the_documented_shape(chat_api, fake_cohere, user):
    # Given a model that adds a task, then lists tasks, then answers
    fake_cohere.script(
        tool_calls_reply(("add_task", {"title": "Water plants"})),
        tool_calls_reply(("list_tasks", {"status": "pending"})),
        text_reply("Added 'Water plants'. You have 1 pending task."),
    )

    # When the user asks
    response = chat_api.post(
        f"/api/{user.id}/chat", json={"message": "Add water plants"}, headers=user.headers
    )

    # Then the body is exactly conversation_id, turn_id, response, this turn's tool calls in
    # order and its pending actions (none)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {
        "conversation_id",
        "turn_id",
        "response",
        "tool_calls",
        "pending_actions",
    }
    assert is_uuid(body["conversation_id"])
    assert is_uuid(body["turn_id"])
    assert body["pending_actions"] == []
    assert body["response"] == "Added 'Water plants'. You have 1 pending task."
    assert [call["name"] for call in body["tool_calls"]] == ["add_task", "list_tasks"]
    for call in body["tool_calls"]:
        assert set(call) == {"name", "arguments", "result"}
    assert body["tool_calls"][0]["arguments"] == {"title": "Water plants"}
    assert body["tool_calls"][1]["arguments"] == {"status": "pending"}
    created = body["tool_calls"][0]["result"]
    assert created["status"] == "created"
    assert listed_ids(body["tool_calls"][1]["result"]) == [created["task_id"]]


# --- the conversations of the brief ---------------------------------------------------------------


def test_add_a_task_to_buy_groceries(chat_api, fake_cohere, user, database):
    # Given a model that calls add_task, then confirms
    fake_cohere.script(
        tool_calls_reply(
            ("add_task", {"title": "Buy groceries"}, "add_task_groceries01"),
            tool_plan="I will add a task called 'Buy groceries'.",
        ),
        text_reply("I've added 'Buy groceries' to your list."),
    )

    # When the user asks for it
    body = chat_ok(chat_api, user, "Add a task to buy groceries")

    # Then the task exists for this user, as the tool result says
    [call] = body["tool_calls"]
    assert call["name"] == "add_task"
    assert call["arguments"] == {"title": "Buy groceries"}
    result = call["result"]
    assert result["status"] == "created"
    assert result["title"] == "Buy groceries"
    row = task_row(database, result["task_id"])
    assert row is not None
    assert row["user_id"] == user.id
    assert row["title"] == "Buy groceries"
    assert row["completed"] is False
    assert row["priority"] == "medium"
    # And the second request replays the tool call and answers it with a `tool` message
    assert len(fake_cohere.requests) == 2
    first, second = fake_cohere.requests
    assert second.messages[:2] == first.messages
    assistant, tool = second.messages[2:]
    assert assistant["role"] == "assistant"
    assert assistant["tool_plan"] == "I will add a task called 'Buy groceries'."
    assert wire_call(assistant) == ("add_task_groceries01", "add_task", {"title": "Buy groceries"})
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == "add_task_groceries01"
    assert json.loads(tool["content"]) == result
    # And the response is the model's final text
    assert body["response"] == "I've added 'Buy groceries' to your list."
    fake_cohere.assert_all_consumed()


def test_show_me_all_my_tasks(chat_api, fake_cohere, user, other_user, task_factory):
    # Given two tasks of the user (one done) and one of somebody else
    milk = task_factory(user, "Buy milk", tags=["home"])
    report = task_factory(user, "Write report", completed=True)
    task_factory(other_user, "Not yours")
    fake_cohere.script(
        tool_calls_reply(("list_tasks", {}, "list_tasks_all00001")),
        text_reply("You have 2 tasks: 'Write report' (done) and 'Buy milk'."),
    )

    # When the user asks to see them all
    body = chat_ok(chat_api, user, "Show me all my tasks")

    # Then list_tasks returned both of the user's tasks, newest first, with the total
    result = body["tool_calls"][0]["result"]
    assert result["total"] == 2
    assert listed_ids(result) == [report.id, milk.id]
    listed = {task["task_id"]: task for task in result["tasks"]}
    assert listed[milk.id]["title"] == "Buy milk"
    assert listed[milk.id]["status"] == "pending"
    assert listed[milk.id]["tags"] == ["home"]
    assert listed[report.id]["status"] == "completed"
    assert listed[report.id]["completed"] is True
    # And the model received that same result
    assert tool_results(fake_cohere.requests[1]) == {"list_tasks_all00001": result}


def test_whats_pending(chat_api, fake_cohere, user, task_factory):
    # Given one pending and one completed task
    pending = task_factory(user, "Call the plumber")
    task_factory(user, "File taxes", completed=True)
    # (models often send null for parameters they leave out)
    fake_cohere.script(
        tool_calls_reply(("list_tasks", {"status": "pending", "priority": None, "q": None})),
        text_reply("One thing is pending: 'Call the plumber'."),
    )

    # When the user asks what is pending
    body = chat_ok(chat_api, user, "What's pending?")

    # Then only the pending task is listed
    result = body["tool_calls"][0]["result"]
    assert result["total"] == 1
    assert listed_ids(result) == [pending.id]
    assert result["tasks"][0]["status"] == "pending"
    assert body["response"] == "One thing is pending: 'Call the plumber'."


def test_mark_a_task_as_complete(chat_api, fake_cohere, user, task_factory, database):
    # Given a pending task of the user
    task = task_factory(user, "Book dentist")
    fake_cohere.script(
        tool_calls_reply(("complete_task", json.dumps({"task_id": task.id}), "complete_task_1")),
        text_reply(f"Task {task.id} 'Book dentist' is done."),
    )

    # When the user says it is done
    body = chat_ok(chat_api, user, f"Mark task {task.id} as complete")

    # Then the tool completed it in the database
    [call] = body["tool_calls"]
    assert call["result"] == {"task_id": task.id, "status": "completed", "title": "Book dentist"}
    row = task_row(database, task.id)
    assert row["completed"] is True
    assert row["completed_at"] is not None
    assert tool_results(fake_cohere.requests[1]) == {"complete_task_1": call["result"]}


def test_delete_the_meeting_task_in_two_steps(chat_api, fake_cohere, user, task_factory, database):
    # Given a meeting task among others
    keep = task_factory(user, "Buy stamps")
    meeting = task_factory(user, "Prepare team meeting", description="slides")
    fake_cohere.script(
        tool_calls_reply(
            ("list_tasks", {"q": "meeting"}, "list_tasks_meeting1"),
            tool_plan="I will find the meeting task first.",
        ),
        tool_calls_reply(
            ("delete_task", {"task_id": meeting.id}, "delete_task_meeting"),
            tool_plan="I found it; I will delete it.",
        ),
        text_reply("Confirm to delete 'Prepare team meeting'."),
    )

    # When the user asks to delete it by name
    body = chat_ok(chat_api, user, "Delete the meeting task")

    # Then the model first found it with list_tasks(q=meeting) ...
    listed, deleted = body["tool_calls"]
    assert listed["name"] == "list_tasks"
    assert listed["arguments"] == {"q": "meeting"}
    assert listed["result"]["total"] == 1
    assert listed_ids(listed["result"]) == [meeting.id]
    # ... then asked to delete it: the user is asked to confirm, nothing is deleted yet
    assert deleted["name"] == "delete_task"
    assert deleted["result"]["status"] == "awaiting_confirmation"
    assert deleted["result"]["task_id"] == meeting.id
    [pending] = body["pending_actions"]
    assert pending["id"] == deleted["result"]["action_id"]
    assert pending["summary"] == 'Delete "Prepare team meeting"'
    assert task_row(database, meeting.id) is not None
    # ... until the user confirms: then it is gone while the other task stays
    confirmed = chat_api.post(
        f"/api/{user.id}/chat/actions/{pending['id']}/confirm", headers=user.headers
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["result"] == {
        "task_id": meeting.id,
        "status": "deleted",
        "title": "Prepare team meeting",
    }
    assert task_row(database, meeting.id) is None
    assert task_row(database, keep.id) is not None
    # And each request carried the steps so far, in order
    assert len(fake_cohere.requests) == 3
    second, third = fake_cohere.requests[1], fake_cohere.requests[2]
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "tool"]
    assert tool_results(second) == {"list_tasks_meeting1": listed["result"]}
    assert third.messages[:4] == second.messages
    step_two, tool = third.messages[4:]
    assert step_two["tool_plan"] == "I found it; I will delete it."
    assert wire_call(step_two) == ("delete_task_meeting", "delete_task", {"task_id": meeting.id})
    assert tool["tool_call_id"] == "delete_task_meeting"
    assert json.loads(tool["content"]) == deleted["result"]


def test_change_a_task_title(chat_api, fake_cohere, user, task_factory, database):
    # Given a task with a priority and tags
    task = task_factory(user, "Call mom", priority="high", tags=["family"])
    fake_cohere.script(
        tool_calls_reply(("update_task", {"task_id": task.id, "title": "Call mom tonight"})),
        text_reply("Renamed it to 'Call mom tonight'."),
    )

    # When the user asks to change its title
    body = chat_ok(chat_api, user, f"Change task {task.id} to 'Call mom tonight'")

    # Then only the title changed
    result = body["tool_calls"][0]["result"]
    assert result["status"] == "updated"
    assert result["task_id"] == task.id
    assert result["title"] == "Call mom tonight"
    row = task_row(database, task.id)
    assert row["title"] == "Call mom tonight"
    assert row["priority"] == "high"
    assert row["tags"] == ["family"]
    assert row["updated_at"] >= row["created_at"]


def test_remember_to_pay_bills(chat_api, fake_cohere, user, database):
    # Given a model that adds a task with every optional field
    fake_cohere.script(
        tool_calls_reply(
            (
                "add_task",
                {
                    "title": "  Pay bills ",
                    "description": "Electricity and water",
                    "priority": "high",
                    "due_date": "2026-12-01",
                    "tags": ["Finance", "finance", "home"],
                },
            )
        ),
        text_reply("I'll remind you: 'Pay bills' is due on 1 December."),
    )

    # When the user mentions something to remember
    body = chat_ok(chat_api, user, "I need to remember to pay bills")

    # Then the task is stored with the rules of the task API (trimmed, UTC, lower-case tags)
    result = body["tool_calls"][0]["result"]
    assert result["status"] == "created"
    assert result["title"] == "Pay bills"
    assert result["due_date"] == "2026-12-01T00:00:00Z"
    assert result["tags"] == ["finance", "home"]
    [row] = task_rows(database, user.id)
    assert row["id"] == result["task_id"]
    assert row["title"] == "Pay bills"
    assert row["description"] == "Electricity and water"
    assert row["priority"] == "high"
    assert row["due_date"] == datetime(2026, 12, 1, tzinfo=UTC)
    assert row["tags"] == ["finance", "home"]


def test_what_have_i_completed(chat_api, fake_cohere, user, task_factory):
    # Given two completed tasks and one pending
    done_first = task_factory(user, "Renew passport", completed=True)
    task_factory(user, "Clean garage")
    done_second = task_factory(user, "Pay rent", completed=True)
    fake_cohere.script(
        tool_calls_reply(("list_tasks", {"status": "completed"})),
        text_reply("You completed 'Pay rent' and 'Renew passport'."),
    )

    # When the user asks what they have completed
    body = chat_ok(chat_api, user, "What have I completed?")

    # Then only completed tasks are listed
    result = body["tool_calls"][0]["result"]
    assert result["total"] == 2
    assert listed_ids(result) == [done_second.id, done_first.id]
    assert all(task["completed"] for task in result["tasks"])


def test_several_tool_calls_in_one_response_run_in_order(chat_api, fake_cohere, user, database):
    # Given a model that adds two tasks in one response
    fake_cohere.script(
        tool_calls_reply(
            ("add_task", {"title": "Buy bread"}, "add_task_bread0001"),
            ("add_task", {"title": "Buy cheese", "priority": "low"}, "add_task_cheese001"),
            tool_plan="I will add both tasks.",
        ),
        text_reply("Added 'Buy bread' and 'Buy cheese'."),
    )

    # When the user asks for both
    body = chat_ok(chat_api, user, "Add buy bread and buy cheese")

    # Then both were created, in the order the model gave
    bread, cheese = body["tool_calls"]
    assert bread["result"]["title"] == "Buy bread"
    assert cheese["result"]["title"] == "Buy cheese"
    assert cheese["result"]["priority"] == "low"
    rows = task_rows(database, user.id)
    assert [row["title"] for row in rows] == ["Buy bread", "Buy cheese"]
    assert [row["id"] for row in rows] == [bread["result"]["task_id"], cheese["result"]["task_id"]]
    # And the model got one tool message per call, in the same order, after one assistant message
    second = fake_cohere.requests[1]
    assistant, tool_bread, tool_cheese = second.messages[2:]
    assert [call["id"] for call in assistant["tool_calls"]] == [
        "add_task_bread0001",
        "add_task_cheese001",
    ]
    assert tool_bread["tool_call_id"] == "add_task_bread0001"
    assert json.loads(tool_bread["content"]) == bread["result"]
    assert tool_cheese["tool_call_id"] == "add_task_cheese001"
    assert json.loads(tool_cheese["content"]) == cheese["result"]


def test_tool_calls_of_a_turn_are_stored_with_the_reply(chat_api, fake_cohere, user):
    # Given a turn that completes a freshly added task in two steps
    fake_cohere.script(
        tool_calls_reply(("add_task", {"title": "Send invoice"})),
        tool_calls_reply(("list_tasks", {"q": "invoice"})),
        text_reply("Added 'Send invoice'."),
    )

    # When the turn runs
    body = chat_ok(chat_api, user, "Add send invoice")

    # Then the conversation holds the user's message and the reply with every call and result
    user_message, reply = stored_messages(chat_api, user, body["conversation_id"])
    assert user_message["role"] == "user"
    assert user_message["content"] == "Add send invoice"
    assert user_message["tool_calls"] is None
    assert reply["role"] == "assistant"
    assert reply["content"] == "Added 'Send invoice'."
    assert reply["tool_calls"] == body["tool_calls"]


def test_step_limit_ends_the_turn_with_a_note(chat_api, fake_cohere, monkeypatch, user, database):
    # Given at most two model steps per turn, and a model that keeps calling tools
    monkeypatch.setenv("CHAT_MAX_STEPS", "2")
    clear_settings_and_client()
    fake_cohere.script(
        tool_calls_reply(("add_task", {"title": "Step one"})),
        tool_calls_reply(("add_task", {"title": "Step two"})),
    )

    # When the user asks
    body = chat_ok(chat_api, user, "Keep going")

    # Then the app stopped after two requests, kept what was done and said so
    assert len(fake_cohere.requests) == 2
    assert [call["result"]["title"] for call in body["tool_calls"]] == ["Step one", "Step two"]
    assert [row["title"] for row in task_rows(database, user.id)] == ["Step one", "Step two"]
    assert "stop" in body["response"].lower()
    stored = stored_messages(chat_api, user, body["conversation_id"])
    assert stored[-1]["content"] == body["response"]
    assert len(stored[-1]["tool_calls"]) == 2


# --- no database connection is held while Cohere is called ----------------------------------------


def _with_query(url: str, **params: str) -> str:
    separator = "&" if "?" in url else "?"
    return url + separator + "&".join(f"{key}={value}" for key, value in params.items())


def test_no_connection_is_held_in_a_transaction_while_cohere_thinks(
    chat_api, fake_cohere, configure, user
):
    # Given the app's connections tagged with an application name we can find in pg_stat_activity
    database_url = os.environ["DATABASE_URL"]
    app_name = f"chat-test-{uuid.uuid4().hex[:8]}"
    reconfigure(configure, DATABASE_URL=_with_query(database_url, application_name=app_name))
    # ... and a model that takes a while on each of two steps
    delay = 0.4
    fake_cohere.script(
        slow_reply(delay, then=tool_calls_reply(("add_task", {"title": "Slow task"}))),
        slow_reply(delay, then=text_reply("Added 'Slow task'.")),
    )
    observer = admin_connection(database_url)
    samples: list[tuple[float, int, list[tuple[str, str | None, Any]]]] = []
    request_seen_at: dict[int, float] = {}
    try:
        # When a chat turn runs in another thread while we watch the database
        thread, outcome = in_thread(lambda: chat_ok(chat_api, user, "Add slow task"))
        while thread.is_alive():
            now = time.monotonic()
            seen = len(fake_cohere.requests)
            if seen and seen not in request_seen_at:
                request_seen_at[seen] = now
            rows = observer.run(
                "SELECT application_name, state, xact_start FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            samples.append((now, seen, [tuple(row) for row in rows]))
            time.sleep(0.02)
        thread.join()
    finally:
        observer.close()

    # Then the turn succeeded after two slow requests
    assert "error" not in outcome, outcome.get("error")
    assert outcome["value"]["response"] == "Added 'Slow task'."
    assert len(fake_cohere.requests) == 2
    # And no connection to the database was ever idle in a transaction
    states = [row for _, _, rows in samples for row in rows]
    assert not [row for row in states if row[1] and row[1].startswith("idle in transaction")]
    # And while Cohere was sleeping, the app's pooled connection sat idle outside a transaction
    waiting = [
        rows
        for at, seen, rows in samples
        if seen in request_seen_at
        and request_seen_at[seen] + 0.05 <= at <= request_seen_at[seen] + delay - 0.1
    ]
    assert len(waiting) >= 2, samples
    for rows in waiting:
        app_rows = [row for row in rows if row[0] == app_name]
        assert app_rows, rows
        assert all(state == "idle" and xact_start is None for _, state, xact_start in app_rows)
