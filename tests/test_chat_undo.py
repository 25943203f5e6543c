"""Undo a chat turn: every task change it (and its confirmed actions) made is reverted, once.

Through the chat handler with the fake Cohere server; the database is read directly afterwards.
"""

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
    task_row,
)
from tests.support.lambda_events import LambdaClient
from tests.support.pg_proxy import PgProxy

UNDO = "WITH turn AS ( SELECT id, status, created_at > now()"


def undo_url(user: Any, turn_id: str) -> str:
    return f"/api/{user.id}/chat/turns/{turn_id}/undo"


def events(database: Any, task_id: int) -> list[str]:
    rows = database.fetch_all(
        text("SELECT detail_type FROM task_events WHERE task_id = :t ORDER BY id").bindparams(
            t=task_id
        )
    )
    return [row["detail_type"] for row in rows]


def sequences(database: Any, task_id: int) -> list[int]:
    rows = database.fetch_all(
        text("SELECT sequence FROM task_events WHERE task_id = :t ORDER BY id").bindparams(
            t=task_id
        )
    )
    return [row["sequence"] for row in rows]


def turn(api: Any, fake_cohere: Any, user: Any, *calls: tuple[str, dict[str, Any]]) -> Any:
    """A turn in which the model makes these calls (in one step), then answers."""
    fake_cohere.script(tool_calls_reply(*calls), text_reply("Done."))
    return chat_ok(api, user, "Do it")


def test_undo_reverts_every_kind_of_change_of_the_turn_once(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given tasks to update, complete and delete (the last created with an Idempotency-Key)
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task

    renamed = task_factory(user, "Old title", priority="low")
    done = task_factory(user, "Call mum")
    gone, _ = create_task(database, user.id, TaskCreate(title="Buy milk"), idempotency_key="k-1")
    gone_row = task_row(database, gone.id)
    # ... and a turn that adds one, updates, completes and (confirmed) deletes the others
    body = turn(
        chat_api,
        fake_cohere,
        user,
        ("add_task", {"title": "New one"}),
        ("update_task", {"task_id": renamed.id, "title": "New title", "priority": "high"}),
        ("complete_task", {"task_id": done.id}),
        ("delete_task", {"task_id": gone.id}),
    )
    added_id = body["tool_calls"][0]["result"]["task_id"]
    action_id = body["pending_actions"][0]["id"]
    confirmed = chat_api.post(
        f"/api/{user.id}/chat/actions/{action_id}/confirm", headers=user.headers
    )
    assert confirmed.status_code == 200, confirmed.text
    assert task_row(database, gone.id) is None

    # When the user undoes the turn
    response = chat_api.post(undo_url(user, body["turn_id"]), headers=user.headers)

    # Then every change is reverted
    assert response.status_code == 200, response.text
    assert response.json() == {
        "turn_id": body["turn_id"],
        "undone": sorted(
            [
                {"task_id": renamed.id, "action": "reverted"},
                {"task_id": done.id, "action": "reverted"},
                {"task_id": gone.id, "action": "restored"},
                {"task_id": added_id, "action": "deleted"},
            ],
            key=lambda item: item["task_id"],
        ),
    }
    assert task_row(database, added_id) is None
    row = task_row(database, renamed.id)
    assert (row["title"], row["priority"]) == ("Old title", "low")
    row = task_row(database, done.id)
    assert (row["completed"], row["completed_at"]) == (False, None)
    # ... the deleted task is back with its id and fields, without its old Idempotency-Key
    restored = task_row(database, gone.id)
    assert restored is not None
    changing = {"updated_at", "idempotency_key", "event_sequence"}
    assert {k: v for k, v in restored.items() if k not in changing} == {
        k: v for k, v in gone_row.items() if k not in changing | {"idempotency_fingerprint"}
    } | {"idempotency_fingerprint": None}
    assert restored["idempotency_key"] is None
    # ... and each undo published its event, like any change
    assert events(database, added_id) == ["Task Created", "Task Deleted"]
    assert events(database, renamed.id)[-1] == "Task Updated"
    assert events(database, done.id)[-2:] == ["Task Completed", "Task Updated"]
    assert events(database, gone.id) == ["Task Created", "Task Deleted", "Task Created"]
    # numbered on from the turn's (`sequence`: 1, 2, 3... per task, whatever undoes what)
    for task_id in (added_id, renamed.id, done.id, gone.id):
        numbers = sequences(database, task_id)
        assert numbers == list(range(1, len(numbers) + 1)), (task_id, numbers)
    assert task_row(database, gone.id)["event_sequence"] == 3

    # When the user undoes it again
    again = chat_api.post(undo_url(user, body["turn_id"]), headers=user.headers)

    # Then the same body, and nothing changed
    assert again.status_code == 200
    assert again.json() == response.json()
    assert events(database, gone.id) == ["Task Created", "Task Deleted", "Task Created"]
    assert task_row(database, gone.id) is not None


def test_an_undo_after_a_change_by_someone_else_is_a_409_and_reverts_nothing(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a turn that renamed two tasks
    from todo_backend.tasks.models import TaskUpdate
    from todo_backend.tasks.service import update_task

    first = task_factory(user, "First")
    second = task_factory(user, "Second")
    body = turn(
        chat_api,
        fake_cohere,
        user,
        ("update_task", {"task_id": first.id, "title": "First, renamed"}),
        ("update_task", {"task_id": second.id, "title": "Second, renamed"}),
    )
    # ... and the second changed since through the REST API's service
    update_task(database, user.id, second.id, TaskUpdate(description="since"))

    # When the user undoes the turn
    response = chat_api.post(undo_url(user, body["turn_id"]), headers=user.headers)

    # Then it is refused, naming the task that changed, and nothing is reverted
    assert response.status_code == 409, response.text
    assert str(second.id) in response.json()["detail"]
    assert str(first.id) not in response.json()["detail"]
    assert task_row(database, first.id)["title"] == "First, renamed"
    assert task_row(database, second.id)["title"] == "Second, renamed"


def test_a_reminder_delivered_since_is_not_a_change(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a turn that renamed a task whose reminder was then delivered
    task = task_factory(user, "Dentist", remind_at=datetime.now(UTC) + timedelta(days=1))
    body = turn(
        chat_api, fake_cohere, user, ("update_task", {"task_id": task.id, "title": "Dentist!"})
    )
    database.fetch_one(
        text("UPDATE tasks SET reminded_at = now() WHERE id = :id RETURNING id").bindparams(
            id=task.id
        )
    )

    # When the user undoes the turn
    response = chat_api.post(undo_url(user, body["turn_id"]), headers=user.headers)

    # Then the rename is undone, and the reminder stays delivered
    assert response.status_code == 200, response.text
    row = task_row(database, task.id)
    assert row["title"] == "Dentist"
    assert row["reminded_at"] is not None


def recurring(task_factory: Any, user: Any) -> Any:
    return task_factory(
        user,
        "Water plants",
        due_date=datetime.now(UTC) + timedelta(days=1),
        recurrence="FREQ=WEEKLY",
    )


def test_undoing_a_recurring_completion_deletes_the_next_occurrence(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a turn that completed a recurring task (which created its next occurrence)
    task = recurring(task_factory, user)
    body = turn(chat_api, fake_cohere, user, ("complete_task", {"task_id": task.id}))
    next_id = body["tool_calls"][0]["result"]["next_task_id"]
    assert task_row(database, next_id) is not None

    # When the user undoes the turn
    response = chat_api.post(undo_url(user, body["turn_id"]), headers=user.headers)

    # Then the task is pending again without a next occurrence, which is deleted
    assert response.status_code == 200, response.text
    assert {"task_id": next_id, "action": "deleted"} in response.json()["undone"]
    row = task_row(database, task.id)
    assert (row["completed"], row["next_task_id"]) == (False, None)
    assert task_row(database, next_id) is None
    assert events(database, next_id) == ["Task Created", "Task Deleted"]


def test_undoing_a_recurring_completion_whose_next_occurrence_changed_is_a_409(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a turn that completed a recurring task, and its next occurrence renamed since
    from todo_backend.tasks.models import TaskUpdate
    from todo_backend.tasks.service import update_task

    task = recurring(task_factory, user)
    body = turn(chat_api, fake_cohere, user, ("complete_task", {"task_id": task.id}))
    next_id = body["tool_calls"][0]["result"]["next_task_id"]
    update_task(database, user.id, next_id, TaskUpdate(title="Water the plants"))

    # When the user undoes the turn
    response = chat_api.post(undo_url(user, body["turn_id"]), headers=user.headers)

    # Then it is refused, naming the occurrence, and nothing is reverted
    assert response.status_code == 409, response.text
    assert str(next_id) in response.json()["detail"]
    assert task_row(database, task.id)["completed"] is True
    assert task_row(database, next_id)["title"] == "Water the plants"


def test_a_turn_older_than_24_hours_cannot_be_undone(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a turn that renamed a task, 25 hours ago
    task = task_factory(user, "Old")
    body = turn(chat_api, fake_cohere, user, ("update_task", {"task_id": task.id, "title": "New"}))
    database.fetch_one(
        text(
            "UPDATE chat_turns SET created_at = now() - interval '25 hours' "
            "WHERE id = :id RETURNING id"
        ).bindparams(id=uuid.UUID(body["turn_id"]))
    )

    # When the user undoes it
    response = chat_api.post(undo_url(user, body["turn_id"]), headers=user.headers)

    # Then 410, and nothing is reverted
    assert response.status_code == 410, response.text
    assert task_row(database, task.id)["title"] == "New"


def test_another_users_turn_is_not_found(chat_api, fake_cohere, user, other_user, task_factory):
    # Given a turn of the user's
    task = task_factory(user, "Old")
    body = turn(chat_api, fake_cohere, user, ("update_task", {"task_id": task.id, "title": "New"}))

    # When another user undoes it, or the user undoes a turn that does not exist
    theirs = chat_api.post(undo_url(other_user, body["turn_id"]), headers=other_user.headers)
    unknown = chat_api.post(undo_url(user, str(uuid.uuid4())), headers=user.headers)

    # Then both are 404
    assert theirs.status_code == 404, theirs.text
    assert unknown.status_code == 404, unknown.text


def test_a_turn_without_changes_undoes_nothing(chat_api, fake_cohere, user):
    # Given a turn that only answered
    fake_cohere.script(text_reply("Hello."))
    body = chat_ok(chat_api, user, "Hi")

    # When the user undoes it
    response = chat_api.post(undo_url(user, body["turn_id"]), headers=user.headers)

    # Then nothing was undone
    assert response.status_code == 200, response.text
    assert response.json() == {"turn_id": body["turn_id"], "undone": []}


@pytest.fixture
def proxied_chat(configure: Any, fake_cohere: Any) -> Iterator[tuple[LambdaClient, PgProxy]]:
    """The chat function, cold-started with its database behind the TCP proxy."""
    with PgProxy(os.environ["DATABASE_URL"]) as proxy:
        configure(DATABASE_URL=proxy.url)
        clear_cohere_client()
        from functions.chat.app import handler

        yield LambdaClient(handler), proxy


@pytest.fixture
def direct_db() -> Iterator[Any]:
    from todo_backend.core.db import Database, create_database_engine

    database = Database(create_database_engine(os.environ["DATABASE_URL"]))
    yield database
    database.engine.dispose()


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_undo_whose_reply_was_lost_is_done_once(proxied_chat, fake_cohere, direct_db, when):
    # Given a turn that added a task and renamed another
    api, proxy = proxied_chat
    user = ChatUser()
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task

    task, _ = create_task(direct_db, user.id, TaskCreate(title="Old"))
    body = turn(
        api,
        fake_cohere,
        user,
        ("add_task", {"title": "Added"}),
        ("update_task", {"task_id": task.id, "title": "New"}),
    )
    added_id = body["tool_calls"][0]["result"]["task_id"]
    # ... and the undo's statement (or its reply, after it committed) lost once
    rule = proxy.fail(UNDO, when=when)

    # When the user undoes the turn
    response = api.post(undo_url(user, body["turn_id"]), headers=user.headers)
    proxy.clear()

    # Then it is reported done (from its record when the first attempt committed), once
    assert rule.fired == 1
    assert response.status_code == 200, response.text
    assert len(response.json()["undone"]) == 2
    assert task_row(direct_db, added_id) is None
    assert task_row(direct_db, task.id)["title"] == "Old"
    assert events(direct_db, task.id) == ["Task Created", "Task Updated", "Task Updated"]
    # And a repeat answers the same
    again = api.post(undo_url(user, body["turn_id"]), headers=user.headers)
    assert again.json() == response.json()


def test_undo_cancels_the_turns_actions_still_waiting_for_confirmation(
    chat_api, fake_cohere, user, task_factory, database
):
    # Given a turn that added a task and asked to delete another (not confirmed)
    keep = task_factory(user, "Keep me")
    body = turn(
        chat_api,
        fake_cohere,
        user,
        ("add_task", {"title": "Added"}),
        ("delete_task", {"task_id": keep.id}),
    )
    action_id = body["pending_actions"][0]["id"]

    # When the user undoes the turn
    response = chat_api.post(undo_url(user, body["turn_id"]), headers=user.headers)
    assert response.status_code == 200, response.text

    # Then the pending delete can no longer be confirmed, and the task stays
    confirmed = chat_api.post(
        f"/api/{user.id}/chat/actions/{action_id}/confirm", headers=user.headers
    )
    assert confirmed.status_code == 409, confirmed.text
    assert task_row(database, keep.id) is not None
    assert response.json()["undone"] == [
        {"task_id": body["tool_calls"][0]["result"]["task_id"], "action": "deleted"}
    ]


def test_a_change_committed_while_the_undo_waits_makes_it_a_409(
    fake_cohere, task_factory, database, direct_db
):
    # Given a turn that renamed two tasks
    from functions.chat.app import handler

    api = LambdaClient(handler)
    user = ChatUser()
    first = task_factory(user, "First")
    second = task_factory(user, "Second")
    body = turn(
        api,
        fake_cohere,
        user,
        ("update_task", {"task_id": first.id, "title": "First, renamed"}),
        ("update_task", {"task_id": second.id, "title": "Second, renamed"}),
    )
    # ... and another transaction changing the second, not committed yet
    from todo_backend.core.db import create_database_engine

    engine = create_database_engine(os.environ["DATABASE_URL"], autocommit=False)
    changer = engine.connect()
    change = changer.begin()
    changer.execute(
        text("UPDATE tasks SET title = 'Elsewhere', updated_at = now() WHERE id = :id").bindparams(
            id=second.id
        )
    )

    # When the user undoes the turn, and the change commits while the undo waits for it
    thread, outcome = in_thread(
        lambda: api.post(undo_url(user, body["turn_id"]), headers=user.headers)
    )
    waiting = text(
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 5
    while direct_db.fetch_one(waiting)["n"] < 1:
        assert time.monotonic() < deadline, "the undo never waited for the change"
        time.sleep(0.01)
    change.commit()
    changer.close()
    engine.dispose()
    thread.join()

    # Then the undo saw the change: 409 naming it, and nothing reverted
    response = outcome["value"]
    assert response.status_code == 409, response.text
    assert str(second.id) in response.json()["detail"]
    assert task_row(database, first.id)["title"] == "First, renamed"
    assert task_row(database, second.id)["title"] == "Elsewhere"
