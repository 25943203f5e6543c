"""Exactly-once task changes and idempotent turns, proven by losing statements and replies.

A TCP proxy (tests/support/pg_proxy.py) sits between the chat function and PostgreSQL. For each
statement a turn sends (the claim, each tool call, the finish), it loses the statement before the
server sees it, or lets the server run it and loses the reply; once (a blip the function rides
out) or twice (the function gives up). Then, through the Lambda handler:
- every task the turn created is shown exactly once in GET .../messages, and none is duplicated;
- the same request with the same Idempotency-Key finishes the turn without repeating a change.
"""

import os
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from tests.fakes.cohere_server import text_reply, tool_calls_reply
from tests.support.chat import (
    ChatUser,
    clear_cohere_client,
    fake_cohere_fixture,  # noqa: F401
    in_thread,
    tool_results,
    usage_row_locked,
)
from tests.support.lambda_events import LambdaClient
from tests.support.pg_proxy import PgProxy

CLAIM = "WITH existing AS"
TOOL = "INSERT INTO chat_tool_calls (turn_id, seq, step, call_id, name, arguments, tool_plan, kind"
FINISH = "jsonb_to_recordset"


@pytest.fixture
def direct_db() -> Any:
    """The test database without the proxy, to check what really committed."""
    from todo_backend.core.db import Database, create_database_engine

    database = Database(create_database_engine(os.environ["DATABASE_URL"]))
    yield database
    database.engine.dispose()


@pytest.fixture
def proxy(configure: Any, fake_cohere: Any) -> Any:
    """The chat function, cold-started with its database behind the proxy."""
    with PgProxy(os.environ["DATABASE_URL"]) as started:
        configure(DATABASE_URL=started.url)
        clear_cohere_client()
        yield started


@pytest.fixture
def lambda_chat(proxy: PgProxy) -> LambdaClient:
    from functions.chat.app import handler

    return LambdaClient(handler)


def post(api: LambdaClient, user: ChatUser, message: str, key: str) -> Any:
    return api.post(
        f"/api/{user.id}/chat",
        json={"message": message},
        headers={**user.headers, "Idempotency-Key": key},
    )


def tasks_of(db: Any, user: ChatUser) -> list[dict[str, Any]]:
    rows = db.fetch_all(
        text("SELECT id, title FROM tasks WHERE user_id = :u ORDER BY id").bindparams(u=user.id)
    )
    return [dict(row) for row in rows]


def turn_of(db: Any, user: ChatUser, key: str) -> dict[str, Any] | None:
    row = db.fetch_one(
        text(
            "SELECT t.id, t.status, t.conversation_id, "
            "(SELECT count(*) FROM chat_tool_calls c WHERE c.turn_id = t.id) AS records "
            "FROM chat_turns t WHERE t.user_id = :u AND t.idempotency_key = :k"
        ).bindparams(u=user.id, k=key)
    )
    return dict(row) if row is not None else None


def recorded_titles(db: Any, turn_id: Any) -> list[str]:
    rows = db.fetch_all(
        text(
            "SELECT arguments->>'title' AS title FROM chat_tool_calls "
            "WHERE turn_id = :t AND task IS NOT NULL ORDER BY seq"
        ).bindparams(t=turn_id)
    )
    return [row["title"] for row in rows]


def recorded_results(db: Any, user: ChatUser) -> list[Any]:
    """The results recorded for the user's tool calls."""
    rows = db.fetch_all(
        text(
            "SELECT c.result FROM chat_tool_calls c JOIN chat_turns t ON t.id = c.turn_id "
            "WHERE t.user_id = :u"
        ).bindparams(u=user.id)
    )
    return [row["result"] for row in rows]


def stored_messages_of(db: Any, user: ChatUser) -> list[tuple[str, str]]:
    """(role, content) of every message the user's conversations hold, oldest first."""
    rows = db.fetch_all(
        text(
            "SELECT m.role, m.content FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.user_id = :u ORDER BY m.created_at"
        ).bindparams(u=user.id)
    )
    return [(row["role"], row["content"]) for row in rows]


def shown_changes(api: LambdaClient, user: ChatUser) -> list[tuple[str, int]]:
    """(title, task id) of every add_task shown in the user's conversations."""
    shown = []
    page = api.get(f"/api/{user.id}/conversations", headers=user.headers).json()
    for conversation in page["items"]:
        response = api.get(
            f"/api/{user.id}/conversations/{conversation['id']}/messages",
            headers=user.headers,
            params={"limit": 100},
        )
        assert response.status_code == 200, response.text
        for message in response.json()["items"]:
            for call in message["tool_calls"] or []:
                if call["name"] == "add_task" and "task_id" in call["result"]:
                    shown.append((call["result"]["title"], call["result"]["task_id"]))
    return shown


def assert_every_change_once(api: LambdaClient, db: Any, user: ChatUser) -> list[str]:
    """No task twice, and each task shown exactly once in the conversation, with its id."""
    rows = tasks_of(db, user)
    titles = [row["title"] for row in rows]
    assert len(titles) == len(set(titles)), f"duplicated: {titles}"
    shown = shown_changes(api, user)
    assert sorted(shown) == sorted((row["title"], row["id"]) for row in rows), (shown, rows)
    return titles


# A change to an existing task: (tool, its arguments besides task_id, the status it reports).
# (delete_task only asks the user to confirm: its statement records that, and deletes nothing.)
CHANGES = [
    ("complete_task", {}, "completed"),
    ("delete_task", {}, "awaiting_confirmation"),
    ("update_task", {"title": "Renamed"}, "updated"),
]

FAILURE_POINTS = [
    ("claim", CLAIM, 0),
    ("tool 1", TOOL, 0),
    ("tool 2", TOOL, 1),
    ("tool 3", TOOL, 2),
    ("finish", FINISH, 0),
]


def scenarios() -> list[Any]:
    cases = []
    for calls in (1, 3):
        for name, match, skip in FAILURE_POINTS:
            if name.startswith("tool") and int(name[-1]) > calls:
                continue
            for when in ("before", "after"):
                for times in (1, 2):
                    cases.append(
                        pytest.param(
                            calls,
                            match,
                            skip,
                            when,
                            times,
                            id=f"{calls}call-{name}-{when}-x{times}",
                        )
                    )
    return cases


@pytest.mark.parametrize(("calls", "match", "skip", "when", "times"), scenarios())
def test_a_lost_statement_or_reply_never_loses_or_repeats_a_change(
    direct_db, lambda_chat, proxy, fake_cohere, calls, match, skip, when, times
):
    user = ChatUser()
    key = f"turn-{uuid.uuid4()}"
    titles = [f"Task {index}" for index in range(1, calls + 1)]
    message = "Add " + ", ".join(titles)

    # Given a model that adds the tasks in one reply, then confirms
    fake_cohere.script(
        tool_calls_reply(*[("add_task", {"title": title}) for title in titles]),
        text_reply("Done."),
    )
    # ... and a statement of the turn (or its reply) lost once or twice
    rule = proxy.fail(match, when=when, times=times, skip=skip)

    # When the user chats
    first = post(lambda_chat, user, message, key)
    proxy.clear()
    # (a change whose reply was lost is read back, not sent again: its rule fires once)
    assert 1 <= rule.fired <= times

    # Then the turn either succeeded or failed cleanly, never with a 500
    assert first.status_code in (200, 503), first.text
    if times == 1:
        # (one lost statement or reply is ridden out)
        assert first.status_code == 200, first.text
    # And no task exists twice, and every task that exists is shown in the conversation
    done = assert_every_change_once(lambda_chat, direct_db, user)
    assert set(done) <= set(titles)
    if first.status_code == 200:
        assert sorted(done) == titles
        assert [call["result"]["title"] for call in first.json()["tool_calls"]] == titles

    # When the client retries with the same key
    turn = turn_of(direct_db, user, key)
    fake_cohere.reset()  # (what the first attempt did not get to ask for is forgotten)
    if turn is not None and turn["status"] == "running":
        # Then, while the turn may still be running, the retry is refused
        busy = post(lambda_chat, user, message, key)
        assert busy.status_code == 409, busy.text
        assert int(busy.headers["retry-after"]) >= 1
        # (until the function that ran it is certainly gone)
        direct_db.fetch_one(
            text(
                "UPDATE chat_turns SET started_at = started_at - interval '10 minutes' "
                "WHERE id = :t RETURNING id"
            ).bindparams(t=turn["id"])
        )
    if turn is None or turn["status"] != "succeeded":
        # A resumed turn shows the model what was recorded; it then adds the rest.
        recorded = recorded_titles(direct_db, turn["id"]) if turn is not None else []
        missing = [title for title in titles if title not in recorded]
        replies = (
            [tool_calls_reply(*[("add_task", {"title": t}) for t in missing])] if missing else []
        )
        fake_cohere.script(*replies, text_reply("Done now."))
    retry = post(lambda_chat, user, message, key)

    # Then it succeeds, every task exists exactly once and is shown exactly once
    assert retry.status_code == 200, retry.text
    assert sorted(assert_every_change_once(lambda_chat, direct_db, user)) == titles
    body = retry.json()
    assert sorted(call["result"]["title"] for call in body["tool_calls"]) == titles
    if turn is not None and turn["status"] == "succeeded":
        # (a finished turn is answered from its stored response, without the model)
        assert not fake_cohere.requests
        if first.status_code == 200:
            assert body == first.json()
    fake_cohere.assert_all_consumed()

    # And a further repeat returns the same response without calling the model
    requests_before = len(fake_cohere.requests)
    again = post(lambda_chat, user, message, key)
    assert again.status_code == 200
    assert again.json() == body
    assert len(fake_cohere.requests) == requests_before


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize(("tool", "arguments", "status"), CHANGES)
def test_a_change_to_an_existing_task_whose_reply_was_lost_is_reported_as_done(
    direct_db, lambda_chat, proxy, fake_cohere, tool, arguments, status, when
):
    # Given a task, and a model that changes it, then answers
    user = ChatUser()
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task

    task, _ = create_task(direct_db, user.id, TaskCreate(title="Existing"))
    fake_cohere.script(
        tool_calls_reply((tool, {"task_id": task.id, **arguments}, "change_call_00001")),
        text_reply("Done."),
    )
    # ... and the tool's statement (or its reply, after it committed) lost once
    proxy.fail(TOOL, when=when)

    # When the user chats
    response = post(lambda_chat, user, "Change it", f"key-{uuid.uuid4()}")
    proxy.clear()

    # Then the change happened once and the model was told it succeeded (not "not found")
    assert response.status_code == 200, response.text
    sent = tool_results(fake_cohere.requests[1])["change_call_00001"]
    assert "error" not in sent, sent
    assert sent["status"] == status
    assert sent["task_id"] == task.id
    # And the conversation shows the call with that result, once
    conversation = lambda_chat.get(f"/api/{user.id}/conversations", headers=user.headers).json()
    messages = lambda_chat.get(
        f"/api/{user.id}/conversations/{conversation['items'][0]['id']}/messages",
        headers=user.headers,
    ).json()["items"]
    calls = [call for message in messages for call in message["tool_calls"] or []]
    assert [(call["name"], call["result"]) for call in calls] == [(tool, sent)]
    assert len(tasks_of(direct_db, user)) == 1
    # And it was recorded once, with the result the model was sent
    assert recorded_results(direct_db, user) == [sent]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_retry_whose_claim_is_lost_once_still_resumes_the_turn(
    direct_db, lambda_chat, proxy, fake_cohere, when
):
    # Given a turn that added a task and then failed at Cohere
    from tests.fakes.cohere_server import error_reply

    user = ChatUser()
    key = f"turn-{uuid.uuid4()}"
    fake_cohere.script(
        tool_calls_reply(("add_task", {"title": "Once"})), error_reply(400), text_reply("Added.")
    )
    assert post(lambda_chat, user, "Add once", key).status_code == 502

    # When the client retries with the same key, and the claim (or its reply) is lost once
    rule = proxy.fail(CLAIM, when=when)
    retry = post(lambda_chat, user, "Add once", key)
    assert rule.fired == 1

    # Then the turn resumes and finishes, the task added once and shown once
    assert retry.status_code == 200, retry.text
    assert retry.json()["response"] == "Added."
    assert [call["result"]["title"] for call in retry.json()["tool_calls"]] == ["Once"]
    assert assert_every_change_once(lambda_chat, direct_db, user) == ["Once"]


@pytest.mark.parametrize(
    ("tool", "arguments", "status"), [change for change in CHANGES if change[0] != "delete_task"]
)
def test_a_change_still_running_when_its_connection_broke_is_done_once(
    direct_db, lambda_chat, proxy, fake_cohere, tool, arguments, status
):
    # Given a task, locked by another transaction so that a change to it waits
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task

    user = ChatUser()
    task, _ = create_task(direct_db, user.id, TaskCreate(title="Existing"))
    fake_cohere.script(
        tool_calls_reply((tool, {"task_id": task.id, **arguments}, "change_call_00002")),
        text_reply("Done."),
    )
    locker = direct_db.engine.connect().execution_options(isolation_level="READ COMMITTED")
    lock = locker.begin()
    locker.execute(text("SELECT id FROM tasks WHERE id = :id FOR UPDATE").bindparams(id=task.id))
    # ... and the tool's connection cut while its statement waits on the server
    proxy.fail(TOOL, when="during")

    # When the user chats, and the lock is released once the function has run the statement again
    thread, outcome = in_thread(lambda: post(lambda_chat, user, "Change it", f"key-{uuid.uuid4()}"))
    deadline = time.monotonic() + 2
    while proxy.count(TOOL) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    lock.commit()
    locker.close()
    thread.join()

    # Then the first attempt's change is reported done (the second found it recorded)
    assert proxy.count(TOOL) == 2
    response = outcome["value"]
    assert response.status_code == 200, response.text
    sent = tool_results(fake_cohere.requests[1])["change_call_00002"]
    assert "error" not in sent, sent
    assert (sent["status"], sent["task_id"]) == (status, task.id)
    # And it is recorded and shown once
    assert recorded_results(direct_db, user) == [sent]
    assert tasks_of(direct_db, user) == [{"id": task.id, "title": sent["title"]}]


def test_a_claim_still_running_when_its_connection_broke_claims_and_counts_the_turn_once(
    direct_db, lambda_chat, proxy, fake_cohere
):
    # Given a model that answers, and the claim's connection cut while its statement waits on
    # the server (the user's usage row is locked), released once the function's next attempt
    # waits too
    user = ChatUser()
    fake_cohere.script(text_reply("Hello."))
    proxy.fail(CLAIM, when="during")

    # When the user chats
    with usage_row_locked(os.environ["DATABASE_URL"], user.id, waiters=2):
        thread, outcome = in_thread(lambda: post(lambda_chat, user, "Hi", f"key-{uuid.uuid4()}"))
    thread.join()

    # Then the turn ran once: answered, one turn, the message stored once, counted once
    # (the claim ran again, lost to the first attempt's insert, and ran a third time to see it)
    assert proxy.count(CLAIM) == 3
    response = outcome["value"]
    assert response.status_code == 200, response.text
    assert response.json()["response"] == "Hello."
    turns = direct_db.fetch_all(
        text("SELECT status FROM chat_turns WHERE user_id = :u").bindparams(u=user.id)
    )
    assert [turn["status"] for turn in turns] == ["succeeded"]
    assert stored_messages_of(direct_db, user) == [("user", "Hi"), ("assistant", "Hello.")]
    usage = lambda_chat.get(f"/api/{user.id}/chat/usage", headers=user.headers).json()
    assert usage["turns"] == 1


def test_a_resuming_claim_still_running_when_its_connection_broke_resumes_the_turn_once(
    direct_db, lambda_chat, proxy, fake_cohere
):
    # Given a turn that failed at Cohere
    from tests.fakes.cohere_server import error_reply

    user = ChatUser()
    key = f"turn-{uuid.uuid4()}"
    fake_cohere.script(error_reply(400))
    assert post(lambda_chat, user, "Hi", key).status_code == 502
    # ... and its retry's claim cut while the statement waits on the server, as above
    fake_cohere.script(text_reply("Hello again."))
    proxy.fail(CLAIM, when="during")

    # When the client retries with the key
    with usage_row_locked(os.environ["DATABASE_URL"], user.id, waiters=2):
        thread, outcome = in_thread(lambda: post(lambda_chat, user, "Hi", key))
    thread.join()

    # Then the function's second attempt takes over its own first one's claim: the turn resumed
    # once and answered, and its two attempts are counted once each
    response = outcome["value"]
    assert response.status_code == 200, response.text
    assert response.json()["response"] == "Hello again."
    turn = turn_of(direct_db, user, key)
    assert turn is not None and turn["status"] == "succeeded"
    assert stored_messages_of(direct_db, user) == [("user", "Hi"), ("assistant", "Hello again.")]
    usage = lambda_chat.get(f"/api/{user.id}/chat/usage", headers=user.headers).json()
    assert usage["turns"] == 2
