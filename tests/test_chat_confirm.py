"""The assistant asks before it destroys: a `delete_task` of the model is a pending action that
runs only when the user confirms it (exactly once), or is cancelled; both are recorded in the
conversation. Through the chat handler, with the fake Cohere server in strict mode.
"""

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import text

from tests.fakes.cohere_server import text_reply, tool_calls_reply
from tests.support.chat import (
    ChatUser,
    chat_ok,
    clear_cohere_client,
    fake_cohere_fixture,  # noqa: F401
    in_thread,
    stored_messages,
    task_row,
    tool_results,
)
from tests.support.lambda_events import LambdaClient
from tests.support.pg_proxy import PgProxy

CONFIRM = "UPDATE chat_pending_actions SET status = 'done'"


def ask_to_delete(api: Any, fake_cohere: Any, user: Any, task_id: int) -> dict[str, Any]:
    """A turn in which the model calls delete_task on the task; the response body."""
    fake_cohere.script(
        tool_calls_reply(("delete_task", {"task_id": task_id}, "delete_call_0001")),
        text_reply("Please confirm the deletion in the app."),
    )
    return chat_ok(api, user, f"Delete task {task_id}")


def action_url(user: Any, action_id: str, verb: str) -> str:
    return f"/api/{user.id}/chat/actions/{action_id}/{verb}"


def deleted_events(database: Any, task_id: int) -> int:
    row = database.fetch_one(
        text(
            "SELECT count(*) AS n FROM task_events WHERE task_id = :t "
            "AND detail_type = 'Task Deleted'"
        ).bindparams(t=task_id)
    )
    return row["n"]


def action_messages(api: Any, user: Any, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's messages that record a confirm or cancel (after the turn's reply)."""
    return stored_messages(api, user, conversation_id)[2:]


# --- asking ---------------------------------------------------------------------------------------


def test_a_delete_asked_by_the_model_waits_for_the_users_confirmation(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a task
    task = task_factory(user, "Buy milk")

    # When the model calls delete_task on it
    body = ask_to_delete(chat_api, fake_cohere, user, task.id)

    # Then nothing is deleted
    assert task_row(database, task.id) is not None
    assert deleted_events(database, task.id) == 0
    # ... the response lists the pending action, with a summary naming the task
    [pending] = body["pending_actions"]
    assert pending["name"] == "delete_task"
    assert pending["arguments"] == {"task_id": task.id}
    assert pending["summary"] == 'Delete "Buy milk"'
    # ... and the model was told plainly that the user must confirm (so its reply says so)
    sent = tool_results(fake_cohere.requests[1])["delete_call_0001"]
    assert sent["status"] == "awaiting_confirmation"
    assert sent["action_id"] == pending["id"]
    assert "confirm" in sent["note"] and "not" in sent["note"]
    # ... as the system prompt says too
    system = fake_cohere.requests[0].messages[0]["content"]
    assert "delete_task does not delete" in system
    assert "confirm" in system


def test_a_delete_of_a_task_the_user_does_not_have_is_an_error_without_pending_action(
    chat_api, fake_cohere, user, other_user, task_factory, database
):
    # Given a task of another user
    theirs = task_factory(other_user, "Not yours")

    # When the model calls delete_task on it
    body = ask_to_delete(chat_api, fake_cohere, user, theirs.id)

    # Then the result is an error, there is no pending action, and the task stays
    [call] = body["tool_calls"]
    assert "not found" in call["result"]["error"]
    assert body["pending_actions"] == []
    assert task_row(database, theirs.id) is not None
    row = database.fetch_one(
        text("SELECT count(*) AS n FROM chat_pending_actions WHERE user_id = :u").bindparams(
            u=user.id
        )
    )
    assert row["n"] == 0


# --- confirming and cancelling --------------------------------------------------------------------


def test_confirm_deletes_once_and_is_recorded_in_the_conversation(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a pending delete
    task = task_factory(user, "Buy milk")
    body = ask_to_delete(chat_api, fake_cohere, user, task.id)
    action_id = body["pending_actions"][0]["id"]

    # When the user confirms it
    confirmed = chat_api.post(action_url(user, action_id, "confirm"), headers=user.headers)

    # Then the task is deleted, its event published once
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == {
        "id": action_id,
        "status": "done",
        "result": {"task_id": task.id, "status": "deleted", "title": "Buy milk"},
    }
    assert task_row(database, task.id) is None
    assert deleted_events(database, task.id) == 1
    # And the conversation records it: an assistant message carrying the call and its result
    [recorded] = action_messages(chat_api, user, body["conversation_id"])
    assert recorded["role"] == "assistant"
    assert recorded["content"] == 'Deleted "Buy milk".'
    assert recorded["tool_calls"] == [
        {
            "name": "delete_task",
            "arguments": {"task_id": task.id},
            "result": confirmed.json()["result"],
        }
    ]

    # When the user confirms again
    again = chat_api.post(action_url(user, action_id, "confirm"), headers=user.headers)

    # Then the same body, and nothing more happened
    assert again.status_code == 200
    assert again.json() == confirmed.json()
    assert deleted_events(database, task.id) == 1
    assert len(action_messages(chat_api, user, body["conversation_id"])) == 1
    # And it cannot be cancelled any more
    cancelled = chat_api.post(action_url(user, action_id, "cancel"), headers=user.headers)
    assert cancelled.status_code == 409, cancelled.text


def test_cancel_deletes_nothing_and_is_recorded_in_the_conversation(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a pending delete
    task = task_factory(user, "Buy milk")
    body = ask_to_delete(chat_api, fake_cohere, user, task.id)
    action_id = body["pending_actions"][0]["id"]

    # When the user cancels it, twice
    cancelled = chat_api.post(action_url(user, action_id, "cancel"), headers=user.headers)
    again = chat_api.post(action_url(user, action_id, "cancel"), headers=user.headers)

    # Then nothing is deleted, and both answer the same
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {"id": action_id, "status": "cancelled"}
    assert again.json() == cancelled.json()
    assert task_row(database, task.id) is not None
    # ... the conversation records the cancel once
    [recorded] = action_messages(chat_api, user, body["conversation_id"])
    assert recorded["role"] == "assistant"
    assert "Cancelled" in recorded["content"]
    [call] = recorded["tool_calls"]
    assert call["name"] == "delete_task"
    assert call["result"] == {"task_id": task.id, "status": "cancelled"}
    # And it can no longer be confirmed
    confirmed = chat_api.post(action_url(user, action_id, "confirm"), headers=user.headers)
    assert confirmed.status_code == 409, confirmed.text
    assert task_row(database, task.id) is not None


def test_the_next_turn_shows_the_model_what_the_user_decided(
    chat_api, fake_cohere, user, task_factory
):
    # Given a confirmed delete
    task = task_factory(user, "Buy milk")
    body = ask_to_delete(chat_api, fake_cohere, user, task.id)
    action_id = body["pending_actions"][0]["id"]
    chat_api.post(action_url(user, action_id, "confirm"), headers=user.headers)

    # When the user chats on in that conversation
    fake_cohere.reset()
    fake_cohere.script(text_reply("Yes, it is gone."))
    chat_ok(chat_api, user, "Is it gone?", body["conversation_id"])

    # Then the model was sent the confirmed call with its result (a valid strict request)
    results = [
        json.loads(message["content"])
        for message in fake_cohere.requests[0].messages
        if message["role"] == "tool"
    ]
    assert {"task_id": task.id, "status": "deleted", "title": "Buy milk"} in results


@pytest.mark.parametrize("verb", ["confirm", "cancel"])
def test_an_expired_action_is_a_409_and_changes_nothing(
    chat_api, fake_cohere, user, task_factory, database, verb
):
    # Given a pending delete asked for more than 15 minutes ago
    task = task_factory(user, "Buy milk")
    body = ask_to_delete(chat_api, fake_cohere, user, task.id)
    action_id = body["pending_actions"][0]["id"]
    database.fetch_one(
        text(
            "UPDATE chat_pending_actions SET expires_at = now() - interval '1 second' "
            "WHERE id = :id RETURNING id"
        ).bindparams(id=uuid.UUID(action_id))
    )

    # When the user confirms or cancels it
    response = chat_api.post(action_url(user, action_id, verb), headers=user.headers)

    # Then it is refused as expired, and nothing changed or was recorded
    assert response.status_code == 409, response.text
    assert "expired" in response.json()["detail"]
    assert task_row(database, task.id) is not None
    assert action_messages(chat_api, user, body["conversation_id"]) == []


@pytest.mark.parametrize("verb", ["confirm", "cancel"])
def test_another_users_action_is_not_found(
    chat_api, fake_cohere, user, other_user, task_factory, database, verb
):
    # Given a pending delete of the user's
    task = task_factory(user, "Buy milk")
    action_id = ask_to_delete(chat_api, fake_cohere, user, task.id)["pending_actions"][0]["id"]

    # When another user confirms or cancels it (or an id that does not exist)
    theirs = chat_api.post(action_url(other_user, action_id, verb), headers=other_user.headers)
    unknown = chat_api.post(action_url(user, str(uuid.uuid4()), verb), headers=user.headers)

    # Then both are 404, and the task stays
    assert theirs.status_code == 404, theirs.text
    assert unknown.status_code == 404, unknown.text
    assert task_row(database, task.id) is not None


def test_a_confirm_after_the_task_was_deleted_elsewhere_reports_it_once(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a pending delete, and the task deleted through the REST API meanwhile
    from todo_backend.tasks.service import delete_task

    task = task_factory(user, "Buy milk")
    action_id = ask_to_delete(chat_api, fake_cohere, user, task.id)["pending_actions"][0]["id"]
    delete_task(database, user.id, task.id)

    # When the user confirms
    response = chat_api.post(action_url(user, action_id, "confirm"), headers=user.headers)

    # Then it is done, with an error result: nothing else was deleted
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "done"
    assert "not found" in response.json()["result"]["error"]
    assert deleted_events(database, task.id) == 1


# --- races and lost replies ---------------------------------------------------------------------


@contextmanager
def action_row_locked(database_url: str, action_id: str, waiters: int) -> Iterator[None]:
    """Hold the action's row locked while the block runs, then until `waiters` statements wait
    on a lock; then release it, so that they all start from the same snapshot."""
    from todo_backend.core.db import create_database_engine

    engine = create_database_engine(database_url, pool_size=2, autocommit=False)
    try:
        with engine.connect() as locker, engine.connect() as watcher:
            locker.execute(
                text("SELECT id FROM chat_pending_actions WHERE id = :id FOR UPDATE").bindparams(
                    id=uuid.UUID(action_id)
                )
            )
            yield
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            deadline = time.monotonic() + 5
            while watcher.execute(waiting).scalar_one() < waiters:
                watcher.rollback()
                if time.monotonic() > deadline:
                    raise AssertionError(f"fewer than {waiters} statements wait on a lock")
                time.sleep(0.01)
            time.sleep(0.05)
            locker.commit()
    finally:
        engine.dispose()


@pytest.fixture
def lambda_chat(fake_cohere: Any) -> LambdaClient:
    from functions.chat.app import handler

    return LambdaClient(handler)


@pytest.fixture
def direct_db() -> Iterator[Any]:
    """The test database through an engine of its own: another container, in a race."""
    from todo_backend.core.db import Database, create_database_engine

    database = Database(create_database_engine(os.environ["DATABASE_URL"]))
    yield database
    database.engine.dispose()


def in_another_container(direct_db: Any, user: Any, action_id: str, verb: str) -> Any:
    """The same request, served by another container (its own connection): status and body."""
    from todo_backend.chat import actions
    from todo_backend.core.errors import DomainError

    try:
        body = getattr(actions, verb)(direct_db, user.id, uuid.UUID(action_id))
    except DomainError as error:
        return error.status_code, None
    return 200, body


def test_two_confirms_at_once_run_it_once_and_answer_the_same(
    lambda_chat, fake_cohere, task_factory, database, direct_db
):
    # Given a pending delete
    user = ChatUser()
    task = task_factory(user, "Buy milk")
    body = ask_to_delete(lambda_chat, fake_cohere, user, task.id)
    action_id = body["pending_actions"][0]["id"]

    # When two confirms arrive at once (in two containers)
    with action_row_locked(os.environ["DATABASE_URL"], action_id, waiters=2):
        here = in_thread(
            lambda: lambda_chat.post(action_url(user, action_id, "confirm"), headers=user.headers)
        )
        there = in_thread(lambda: in_another_container(direct_db, user, action_id, "confirm"))
    for thread, _ in (here, there):
        thread.join()

    # Then both answer 200 with the same body, and the delete ran once
    first = here[1]["value"]
    assert first.status_code == 200, first.text
    assert there[1]["value"] == (200, first.json())
    assert first.json()["result"]["status"] == "deleted"
    assert deleted_events(database, task.id) == 1
    assert len(action_messages(lambda_chat, user, body["conversation_id"])) == 1


@pytest.mark.parametrize("here_verb", ["confirm", "cancel"])
def test_a_confirm_racing_a_cancel_lets_exactly_one_win(
    lambda_chat, fake_cohere, task_factory, database, direct_db, here_verb
):
    # Given a pending delete
    user = ChatUser()
    task = task_factory(user, "Buy milk")
    body = ask_to_delete(lambda_chat, fake_cohere, user, task.id)
    action_id = body["pending_actions"][0]["id"]
    there_verb = "cancel" if here_verb == "confirm" else "confirm"

    # When a confirm and a cancel arrive at once (in two containers)
    with action_row_locked(os.environ["DATABASE_URL"], action_id, waiters=2):
        here = in_thread(
            lambda: lambda_chat.post(action_url(user, action_id, here_verb), headers=user.headers)
        )
        there = in_thread(lambda: in_another_container(direct_db, user, action_id, there_verb))
    for thread, _ in (here, there):
        thread.join()

    # Then exactly one of them succeeded, the other is a 409
    statuses = {here_verb: here[1]["value"].status_code, there_verb: there[1]["value"][0]}
    assert sorted(statuses.values()) == [200, 409], statuses
    # ... and the task is deleted exactly when the confirm won
    deleted = statuses["confirm"] == 200
    assert (task_row(database, task.id) is None) is deleted
    assert deleted_events(database, task.id) == int(deleted)
    assert len(action_messages(lambda_chat, user, body["conversation_id"])) == 1


@pytest.fixture
def proxied_chat(configure: Any, fake_cohere: Any) -> Iterator[tuple[LambdaClient, PgProxy]]:
    """The chat function, cold-started with its database behind the TCP proxy."""
    with PgProxy(os.environ["DATABASE_URL"]) as proxy:
        configure(DATABASE_URL=proxy.url)
        clear_cohere_client()
        from functions.chat.app import handler

        yield LambdaClient(handler), proxy


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_confirm_whose_reply_was_lost_is_done_once(proxied_chat, fake_cohere, direct_db, when):
    # Given a pending delete
    api, proxy = proxied_chat
    user = ChatUser()
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task

    task, _ = create_task(direct_db, user.id, TaskCreate(title="Buy milk"))
    body = ask_to_delete(api, fake_cohere, user, task.id)
    action_id = body["pending_actions"][0]["id"]
    # ... and the confirm's statement (or its reply, after it committed) lost once
    rule = proxy.fail(CONFIRM, when=when)

    # When the user confirms
    response = api.post(action_url(user, action_id, "confirm"), headers=user.headers)
    proxy.clear()

    # Then it is reported done, from the record when the first attempt committed
    assert rule.fired == 1
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {
        "task_id": task.id,
        "status": "deleted",
        "title": "Buy milk",
    }
    # ... the delete ran once, and is recorded once
    assert task_row(direct_db, task.id) is None
    assert deleted_events(direct_db, task.id) == 1
    assert len(action_messages(api, user, body["conversation_id"])) == 1
    # And a repeat answers the same
    again = api.post(action_url(user, action_id, "confirm"), headers=user.headers)
    assert again.json() == response.json()


def test_a_confirm_still_running_when_its_connection_broke_is_done_once(
    proxied_chat, fake_cohere, direct_db
):
    # Given a pending delete of a task locked by another transaction (the delete waits)
    api, proxy = proxied_chat
    user = ChatUser()
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task

    task, _ = create_task(direct_db, user.id, TaskCreate(title="Buy milk"))
    body = ask_to_delete(api, fake_cohere, user, task.id)
    action_id = body["pending_actions"][0]["id"]
    locker = direct_db.engine.connect().execution_options(isolation_level="READ COMMITTED")
    lock = locker.begin()
    locker.execute(text("SELECT id FROM tasks WHERE id = :id FOR UPDATE").bindparams(id=task.id))
    # ... and the confirm's connection cut while its statement waits on the server
    proxy.fail(CONFIRM, when="during")

    # When the user confirms, and the lock is released once the function has run it again
    thread, outcome = in_thread(
        lambda: api.post(action_url(user, action_id, "confirm"), headers=user.headers)
    )
    deadline = time.monotonic() + 2
    while proxy.count(CONFIRM) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    lock.commit()
    locker.close()
    thread.join()

    # Then the first attempt's delete is reported done (the second found it settled)
    assert proxy.count(CONFIRM) == 2
    response = outcome["value"]
    assert response.status_code == 200, response.text
    assert response.json()["result"]["status"] == "deleted"
    assert deleted_events(direct_db, task.id) == 1
    assert len(action_messages(api, user, body["conversation_id"])) == 1
