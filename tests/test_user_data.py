"""A user's data: export (GET /api/{user_id}/export) and erase (DELETE /api/{user_id}/data).

The coverage test reads the database's catalog: every table with a `user_id` column, and every
table that references one of those by a foreign key (messages and chat_tool_calls have no
`user_id`), must be in COVERAGE, which says what erase and export do with it. A new table that
holds user data fails it until erase and export take it into account.
"""

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from tests.fakes.cohere_server import slow_reply, text_reply, tool_calls_reply
from tests.support.chat import (
    ChatUser,
    fake_cohere_fixture,  # noqa: F401
    in_thread,
)
from tests.support.fake_eventbridge import FakeEventBridge, fake_eventbridge
from tests.support.lambda_events import LambdaClient

ERASED = "erased"
# What erase and export do with each table holding user data (see the module's docstring).
COVERAGE = {
    "tasks": (ERASED, "exported"),
    "task_events": (
        "erased, but for the erase events (`User Data Deleted`)",
        "not exported: the delivery record of task changes; the tasks are exported",
    ),
    "conversations": (ERASED, "exported"),
    "messages": (ERASED, "exported (as each conversation's messages)"),
    "chat_turns": (ERASED, "exported (a turn without a stored reply: its note and calls)"),
    "chat_tool_calls": (ERASED, "exported (as the tool_calls of the messages)"),
    "chat_pending_actions": (
        ERASED,
        "not exported: a delete waiting 15 minutes for confirmation; once confirmed or cancelled "
        "it is in the conversation's messages",
    ),
    "chat_undos": (ERASED, "not exported: an undo's stored answer; its changes are in the tasks"),
    "user_settings": (ERASED, "exported (as `settings`: the time zone)"),
    "chat_usage": (
        "earlier days erased; today's kept: erasing does not reset a quota",
        "not exported: counters, shown by GET .../chat/usage",
    ),
    "chat_leases": (
        "kept: the running turn's lease ends with the turn, which still bills its tokens",
        "not exported: no content, only while a turn runs",
    ),
    "task_counts": (
        "erased with the tasks (the tasks' triggers delete a row that reaches zero)",
        "not exported: derived from the tasks (counts shown by GET /api/stats)",
    ),
    "tag_counts": (
        "erased with the tasks (the tasks' triggers delete a row that reaches zero)",
        "not exported: derived from the tasks (counts shown by GET /api/tags)",
    ),
}
KEPT = {"chat_usage": 1, "chat_leases": 1}  # rows of the user left after an erase (seeded below)

USER_EVENT = "User Data Deleted"


@pytest.fixture
def lambda_chat(fake_cohere: Any) -> LambdaClient:
    from functions.chat.app import handler

    return LambdaClient(handler)


@pytest.fixture
def lambda_tasks() -> LambdaClient:
    from functions.tasks.app import handler

    return LambdaClient(handler)


@pytest.fixture
def eventbridge(monkeypatch: pytest.MonkeyPatch, database: Any) -> Iterator[FakeEventBridge]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    # Events other tests left pending are not these tests' concern.
    run(database, "UPDATE task_events SET relayed_at = now() WHERE relayed_at IS NULL")
    with fake_eventbridge() as fake:
        yield fake


def events_client(fake: FakeEventBridge) -> Any:
    import boto3

    return boto3.client("events", endpoint_url=fake.base_url, region_name="eu-west-1")


def relay(database: Any, client: Any) -> Any:
    from todo_backend.events.relay import relay_pending_events

    return relay_pending_events(database, "todo-bus", client)


def run(database: Any, sql: str, **parameters: Any) -> list[dict[str, Any]]:
    with database.engine.connect() as connection:
        result = connection.execute(text(sql), parameters)
        return [dict(row._mapping) for row in result] if result.returns_rows else []


# --- the catalog: every table that holds user data ------------------------------------------------


def user_tables(database: Any) -> dict[str, str]:
    """Each table holding user data, with the condition that selects one user's rows
    (`:user_id`): its own `user_id`, or a foreign key to such a table, followed recursively."""
    owned = {
        row["table_name"]
        for row in run(
            database,
            "SELECT c.table_name FROM information_schema.columns AS c "
            "JOIN information_schema.tables AS t USING (table_schema, table_name) "
            "WHERE c.table_schema = current_schema() AND c.column_name = 'user_id' "
            "AND t.table_type = 'BASE TABLE'",
        )
    }
    keys = run(
        database,
        """
        SELECT child.relname AS child, parent.relname AS parent,
               (SELECT array_agg(a.attname::text ORDER BY k.ord)
                FROM unnest(fk.conkey) WITH ORDINALITY AS k(num, ord)
                JOIN pg_attribute AS a ON a.attrelid = fk.conrelid AND a.attnum = k.num)
                   AS child_columns,
               (SELECT array_agg(a.attname::text ORDER BY k.ord)
                FROM unnest(fk.confkey) WITH ORDINALITY AS k(num, ord)
                JOIN pg_attribute AS a ON a.attrelid = fk.confrelid AND a.attnum = k.num)
                   AS parent_columns
        FROM pg_constraint AS fk
        JOIN pg_class AS child ON child.oid = fk.conrelid
        JOIN pg_class AS parent ON parent.oid = fk.confrelid
        WHERE fk.contype = 'f' AND child.relnamespace = current_schema()::regnamespace
        ORDER BY child.relname, fk.conname
        """,
    )
    conditions = {name: "user_id = :user_id" for name in owned}
    changed = True
    while changed:
        changed = False
        for key in keys:
            if key["child"] not in conditions and key["parent"] in conditions:
                columns = ", ".join(key["child_columns"])
                parent_columns = ", ".join(key["parent_columns"])
                conditions[key["child"]] = (
                    f"({columns}) IN (SELECT {parent_columns} FROM {key['parent']} "
                    f"WHERE {conditions[key['parent']]})"
                )
                changed = True
    return conditions


def rows_per_table(database: Any, tables: dict[str, str], user_id: str) -> dict[str, int]:
    return {
        name: run(database, f"SELECT count(*) AS n FROM {name} WHERE {where}", user_id=user_id)[0][
            "n"
        ]
        for name, where in tables.items()
    }


# --- seeding a user's data through the API --------------------------------------------------------


def seed(tasks_api: Any, chat_api: Any, fake_cohere: Any, database: Any, user: Any) -> dict:
    """A time zone, tasks, a changed and a completed one, a conversation whose turn added a task
    with a tool (then undone) and whose next turn asked to delete one (waiting for
    confirmation), and yesterday's chat usage: a row in every table that holds user data."""
    zone = tasks_api.put("/api/settings", json={"timezone": "Europe/Berlin"}, headers=user.headers)
    assert zone.status_code == 200, zone.text
    created = [
        tasks_api.post(
            "/api/tasks", json={"title": title, "tags": tags}, headers=user.headers
        ).json()
        for title, tags in (("Buy milk", ["shopping"]), ("Call mum", []))
    ]
    tasks_api.patch(
        f"/api/tasks/{created[0]['id']}", json={"priority": "high"}, headers=user.headers
    )
    tasks_api.patch(f"/api/tasks/{created[1]['id']}/complete", headers=user.headers)
    fake_cohere.script(
        tool_calls_reply(("add_task", {"title": "Water plants"})), text_reply("Added it.")
    )
    turn = chat_api.post(
        f"/api/{user.id}/chat", json={"message": "Add water plants"}, headers=user.headers
    )
    assert turn.status_code == 200, turn.text
    # ... a delete waiting for the user's confirmation, and an undone turn
    fake_cohere.script(
        tool_calls_reply(("delete_task", {"task_id": created[0]["id"]})), text_reply("Sure?")
    )
    asked = chat_api.post(
        f"/api/{user.id}/chat",
        json={"message": "Delete milk", "conversation_id": turn.json()["conversation_id"]},
        headers=user.headers,
    )
    assert asked.status_code == 200 and asked.json()["pending_actions"], asked.text
    undone = chat_api.post(
        f"/api/{user.id}/chat/turns/{turn.json()['turn_id']}/undo", headers=user.headers
    )
    assert undone.status_code == 200, undone.text
    run(
        database,
        "INSERT INTO chat_usage (user_id, day, turns, tokens) "
        "VALUES (:user_id, (now() AT TIME ZONE 'UTC')::date - 1, 3, 300)",
        user_id=user.id,
    )
    return {
        "tasks": [task["id"] for task in created],
        "conversation": turn.json()["conversation_id"],
    }


def erase(api: Any, user: Any) -> Any:
    return api.delete(f"/api/{user.id}/data", headers=user.headers)


def export(api: Any, user: Any, cursor: str | None = None) -> dict[str, Any]:
    response = api.get(
        f"/api/{user.id}/export",
        params={"cursor": cursor} if cursor else None,
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


# --- erase ----------------------------------------------------------------------------------------


def test_every_table_holding_user_data_is_covered_by_erase_and_export(
    lambda_tasks, lambda_chat, fake_cohere, database
):
    # Given the tables that hold user data, as the catalog tells
    tables = user_tables(database)
    # Then each is known to erase and export (a new one must be added to both, and here)
    assert set(tables) == set(COVERAGE), (
        "tables holding user data that erase/export do not cover: "
        f"{sorted(set(tables) - set(COVERAGE))}; gone: {sorted(set(COVERAGE) - set(tables))}"
    )

    # Given two users with data in every one of them
    user, other = ChatUser(), ChatUser()
    for someone in (user, other):
        seed(lambda_tasks, lambda_chat, fake_cohere, database, someone)
    before = rows_per_table(database, tables, user.id)
    others_before = rows_per_table(database, tables, other.id)
    assert all(before.values()), before

    # When the user's data is erased
    response = erase(lambda_tasks, user)

    # Then every row of the user is gone but today's usage and the lease (and the erase event)
    assert response.status_code == 204, response.text
    after = rows_per_table(database, tables, user.id)
    assert after == {name: KEPT.get(name, 0) + (name == "task_events") for name in tables}
    assert [
        e["detail_type"]
        for e in run(
            database,
            "SELECT detail_type FROM task_events WHERE user_id = :user_id",
            user_id=user.id,
        )
    ] == [USER_EVENT]
    # And nothing of the other user was touched
    assert rows_per_table(database, tables, other.id) == others_before


def test_after_an_erase_every_list_is_empty_and_every_former_id_404(
    tasks_api_in_both_path_forms, lambda_chat, fake_cohere, database
):
    tasks_api = tasks_api_in_both_path_forms
    user = ChatUser()
    ids = seed(tasks_api, lambda_chat, fake_cohere, database, user)

    assert tasks_api.delete("/api/data", headers=user.headers).status_code == 204

    headers = user.headers
    assert tasks_api.get("/api/tasks", headers=headers).json()["total"] == 0
    assert tasks_api.get("/api/tags", headers=headers).json()["items"] == []
    assert tasks_api.get("/api/stats", headers=headers).json()["total"] == 0
    assert tasks_api.get("/api/reminders", headers=headers).json()["items"] == []
    for task_id in ids["tasks"]:
        assert tasks_api.get(f"/api/tasks/{task_id}", headers=headers).status_code == 404
    chat_base = f"/api/{user.id}/conversations"
    assert lambda_chat.get(chat_base, headers=headers).json() == {"items": [], "total": 0}
    messages = lambda_chat.get(f"{chat_base}/{ids['conversation']}/messages", headers=headers)
    assert messages.status_code == 404
    page = export(tasks_api, user)
    assert (page["tasks"], page["conversations"], page["next_cursor"]) == ([], [], None)


def test_erase_publishes_one_user_event_and_none_of_the_users_unclaimed_events(
    lambda_tasks, user, other_user, database, eventbridge
):
    # Given task events of two users that no relay run has claimed yet
    for someone in (user, other_user):
        lambda_tasks.post("/api/tasks", json={"title": "Mine"}, headers=someone.headers)

    # When one user's data is erased, and the relay runs
    assert erase(lambda_tasks, user).status_code == 204
    relay(database, events_client(eventbridge))

    # Then the erase was published once, as the contract describes it, and none of the user's
    # earlier events; the other user's event was
    published = eventbridge.published()
    users = [entry for entry in published if entry["Detail"]["user_id"] == user.id]
    assert [(e["Source"], e["DetailType"]) for e in users] == [("todo.users", USER_EVENT)]
    detail = users[0]["Detail"]
    assert set(detail) == {"event_id", "user_id", "occurred_at"}
    assert detail["occurred_at"].endswith("Z")
    assert [e["DetailType"] for e in published if e["Detail"]["user_id"] == other_user.id] == [
        "Task Created"
    ]


def test_a_repeated_erase_deletes_and_publishes_nothing_and_keeps_the_first_event(
    lambda_tasks, user, database, eventbridge
):
    # Given a user whose data was erased, the erase event published
    lambda_tasks.post("/api/tasks", json={"title": "Mine"}, headers=user.headers)
    assert erase(lambda_tasks, user).status_code == 204
    client = events_client(eventbridge)
    relay(database, client)
    first = run(database, "SELECT * FROM task_events WHERE user_id = :u", u=user.id)

    # When it is erased again (and again, before a relay run)
    assert erase(lambda_tasks, user).status_code == 204
    assert erase(lambda_tasks, user).status_code == 204
    relay(database, client)

    # Then nothing more was published, and the first erase's event is still recorded
    assert [e["DetailType"] for e in eventbridge.published()] == [USER_EVENT]
    assert run(database, "SELECT * FROM task_events WHERE user_id = :u", u=user.id) == first
    # And a user who never had data has nothing to erase: no event either
    assert erase(lambda_tasks, ChatUser()).status_code == 204
    relay(database, client)
    assert len(eventbridge.published()) == 1


def test_an_erase_keeps_todays_chat_usage(lambda_tasks, lambda_chat, fake_cohere, configure):
    # Given one chat turn a day, used
    configure(CHAT_DAILY_TURNS="1")
    user = ChatUser()
    fake_cohere.script(text_reply("Hi."))
    assert (
        lambda_chat.post(
            f"/api/{user.id}/chat", json={"message": "Hi"}, headers=user.headers
        ).status_code
        == 200
    )

    # When the user erases their data
    assert erase(lambda_tasks, user).status_code == 204

    # Then the quota is still used up: erasing does not reset it
    usage = lambda_chat.get(f"/api/{user.id}/chat/usage", headers=user.headers).json()
    assert usage["turns"] == 1
    again = lambda_chat.post(f"/api/{user.id}/chat", json={"message": "Hi"}, headers=user.headers)
    assert again.status_code == 429
    assert len(fake_cohere.requests) == 1


def test_erase_is_only_for_the_user_themselves(tasks_api, user, other_user):
    tasks_api.post("/api/tasks", json={"title": "Mine"}, headers=user.headers)
    assert tasks_api.delete(f"/api/{user.id}/data", headers=other_user.headers).status_code == 403
    assert tasks_api.get(f"/api/{user.id}/export", headers=other_user.headers).status_code == 403
    assert tasks_api.delete("/api/data").status_code == 401
    assert tasks_api.get("/api/tasks", headers=user.headers).json()["total"] == 1


def test_erase_racing_a_chat_turn_and_a_relay_run(
    lambda_tasks, lambda_chat, fake_cohere, database, eventbridge, configure
):
    # Given two users with tasks, the user's events not yet relayed
    configure(DB_POOL_SIZE="4")
    user, other = ChatUser(), ChatUser()
    for someone in (user, other):
        for title in ("One", "Two"):
            lambda_tasks.post("/api/tasks", json={"title": title}, headers=someone.headers)
    others_tasks = lambda_tasks.get("/api/tasks", headers=other.headers).json()["items"]

    # ... a chat turn of the user whose model, still thinking, will then add a task
    fake_cohere.script(
        slow_reply(1.0, then=tool_calls_reply(("add_task", {"title": "Added meanwhile"}))),
        text_reply("Added."),
    )
    turn, turn_outcome = in_thread(
        lambda: lambda_chat.post(
            f"/api/{user.id}/chat", json={"message": "Add a task"}, headers=user.headers
        )
    )
    deadline = time.monotonic() + 5
    while not fake_cohere.requests:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    # ... and a relay run that has claimed everyone's events and is publishing them
    client = events_client(eventbridge)
    claimed, go_on = threading.Event(), threading.Event()

    def hold(**_: Any) -> None:
        claimed.set()
        go_on.wait(10)

    client.meta.events.register("before-send.events.PutEvents", hold)
    relay_run, relay_outcome = in_thread(lambda: relay(database, client))
    assert claimed.wait(5)

    # When the user's data is erased meanwhile
    response = erase(lambda_tasks, user)
    go_on.set()
    relay_run.join()
    turn.join()

    # Then the erase succeeded, and so did the others, without a 500
    assert response.status_code == 204, response.text
    assert "error" not in relay_outcome and "error" not in turn_outcome
    assert turn_outcome["value"].status_code in (200, 503), turn_outcome["value"].text
    # And nothing of the user survived: the task the turn tried to add afterwards included
    tables = user_tables(database)
    left = rows_per_table(database, tables, user.id)
    assert {name: n for name, n in left.items() if n} == {
        "task_events": 1,
        "chat_usage": 1,
        "chat_leases": 1,
    }, left
    assert (
        run(
            database,
            "SELECT count(*) AS n FROM tasks WHERE title = 'Added meanwhile' AND user_id = :u",
            u=user.id,
        )[0]["n"]
        == 0
    )
    # And the other user's tasks and events are untouched, their events relayed
    assert lambda_tasks.get("/api/tasks", headers=other.headers).json()["items"] == others_tasks
    assert not run(
        database,
        "SELECT id FROM task_events WHERE user_id = :u AND relayed_at IS NULL",
        u=other.id,
    )
    # And the next run publishes the erase (a run in flight may have delivered what it claimed)
    relay(database, events_client(eventbridge))
    published = [
        e["DetailType"] for e in eventbridge.published() if e["Detail"]["user_id"] == user.id
    ]
    assert published[-1] == USER_EVENT and published.count(USER_EVENT) == 1


def test_an_erase_that_deadlocks_with_a_change_in_flight_runs_again(
    lambda_tasks, lambda_chat, fake_cohere, configure
):
    # Given a user with tasks and a chat turn
    from todo_backend.core.db import create_database_engine, get_database

    server = os.environ["DATABASE_URL"]
    # (PostgreSQL fails the transaction whose deadlock check, deadlock_timeout after it began to
    # wait, finds the cycle: the erase's, 3 s after it waits, while the change's comes far later)
    configure(
        DATABASE_URL=f"{server}{'&' if '?' in server else '?'}options=-c%20deadlock_timeout%3D3s"
    )
    database = get_database()
    user = ChatUser()
    ids = seed(lambda_tasks, lambda_chat, fake_cohere, database, user)
    engine = create_database_engine(server, pool_size=2, autocommit=False)
    try:
        with engine.connect() as change, engine.connect() as watcher:
            # ... and a change in flight that holds one of the user's tasks
            change.execute(text("SET LOCAL deadlock_timeout = '60s'"))
            change.execute(
                text("UPDATE tasks SET title = 'Changing' WHERE id = :id"), {"id": ids["tasks"][0]}
            )
            # When the user's data is erased meanwhile (it waits for that task)
            thread, outcome = in_thread(lambda: erase(lambda_tasks, user))
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND query LIKE 'WITH conversations AS%'"
            )
            deadline = time.monotonic() + 5
            while watcher.execute(waiting).scalar_one() < 1:
                watcher.rollback()
                assert time.monotonic() < deadline, "the erase never waited for the task"
                time.sleep(0.01)
            # ... and the change then needs the turn the erase holds, as a tool call's record
            # does: a deadlock, which PostgreSQL breaks by failing the erase's transaction
            change.execute(
                text("SELECT 1 FROM chat_turns WHERE user_id = :u FOR KEY SHARE"), {"u": user.id}
            )
            change.commit()
        thread.join()
    finally:
        engine.dispose()

    # Then the erase ran again once the change was done, and erased everything, the change too
    assert "error" not in outcome, outcome
    assert outcome["value"].status_code == 204, outcome["value"].text
    left = rows_per_table(database, user_tables(database), user.id)
    assert {name: n for name, n in left.items() if n} == {
        "task_events": 1,
        **KEPT,
    }, left


# --- export ---------------------------------------------------------------------------------------


def test_a_little_data_is_exported_whole_in_one_page_as_the_api_shows_it(
    tasks_api_in_both_path_forms, lambda_chat, fake_cohere, database
):
    tasks_api = tasks_api_in_both_path_forms
    user = ChatUser()
    seed(tasks_api, lambda_chat, fake_cohere, database, user)

    page = tasks_api.get("/api/export", headers=user.headers)

    assert page.status_code == 200, page.text
    body = page.json()
    assert set(body) == {"exported_at", "settings", "tasks", "conversations", "next_cursor"}
    assert body["next_cursor"] is None
    # ... exported_at, as every date-time the API returns, at the user's offset (seed: Berlin)
    exported_at = datetime.fromisoformat(body["exported_at"])
    assert exported_at.utcoffset() == exported_at.astimezone(ZoneInfo("Europe/Berlin")).utcoffset()
    assert body["settings"] == {"timezone": "Europe/Berlin"}
    assert isinstance(body["settings"], dict)
    listed = tasks_api.get(
        "/api/tasks", params={"sort": "created_at", "order": "asc"}, headers=user.headers
    ).json()
    assert body["tasks"] == sorted(listed["items"], key=lambda task: task["id"])
    conversations = lambda_chat.get(f"/api/{user.id}/conversations", headers=user.headers).json()
    expected = [
        {
            **conversation,
            "messages": lambda_chat.get(
                f"/api/{user.id}/conversations/{conversation['id']}/messages",
                headers=user.headers,
            ).json()["items"],
        }
        for conversation in conversations["items"]
    ]
    assert body["conversations"] == expected
    assert [len(c["messages"]) for c in body["conversations"]] == [4]
    assert body["conversations"][0]["messages"][1]["tool_calls"][0]["name"] == "add_task"


def bulk_tasks(database: Any, user_id: str, count: int) -> None:
    """`count` tasks as large as the API allows, written at once (the API is not under test)."""
    run(
        database,
        "INSERT INTO tasks (user_id, title, description, tags) "
        "SELECT :u, 'Task ' || n || ' ' || repeat('t', 180), repeat('d', 1000), "
        "ARRAY(SELECT 'tag-' || k || repeat('x', 20) FROM generate_series(1, 10) AS k) "
        "FROM generate_series(1, :count) AS n",
        u=user_id,
        count=count,
    )


def all_pages(api: Any, user: Any) -> list[tuple[int, dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        response = api.get(
            f"/api/{user.id}/export",
            params={"cursor": cursor} if cursor else None,
            headers=user.headers,
        )
        assert response.status_code == 200, response.text
        pages.append((len(response.text.encode()), response.json()))
        cursor = pages[-1][1]["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100


def test_a_large_export_comes_in_pages_of_at_most_5_mb_that_join_up(lambda_tasks, database, user):
    # Given 6,000 tasks of about 1.7 KB of JSON each (~10 MB)
    bulk_tasks(database, user.id, 6000)

    # When the user exports, page after page
    pages = all_pages(lambda_tasks, user)

    # Then each page is at most 5 MB, and together they hold every task once, in order
    assert len(pages) >= 2
    assert all(size <= 5 * 1024 * 1024 for size, _ in pages)
    # (a page is filled, not cut short)
    assert all(size > 5 * 1024 * 1024 - 4096 for size, _ in pages[:-1])
    ids = [task["id"] for _, page in pages for task in page["tasks"]]
    assert len(ids) == 6000 and ids == sorted(set(ids))


def test_a_conversation_longer_than_a_page_continues_on_the_next(
    lambda_tasks, database, user, monkeypatch
):
    # Given pages of 20 KB, and tasks and conversations that need several
    from tests.support.chat import seed_turn
    from todo_backend.userdata import export as export_module

    monkeypatch.setattr(export_module, "EXPORT_PAGE_MAX_BYTES", 20_000)
    bulk_tasks(database, user.id, 30)
    long = seed_turn(database, user.id, "First " + "x" * 3000, "Reply " + "y" * 3000)
    for n in range(6):
        from todo_backend.chat import turns
        from todo_backend.core.settings import get_settings

        claim = turns.claim(
            database, get_settings(), user.id, long, f"More {n} " + "z" * 3000, None
        )
        assert claim.turn_id is not None
        turns.finish(
            database,
            claim.turn_id,
            user_id=user.id,
            attempt_id=claim.attempt_id,
            succeeded=True,
            content="Ok " + "w" * 3000,
            tool_calls=[],
            tool_plans=[],
            unrecorded=[],
            recorded=[],
            response=None,
            input_tokens=0,
            output_tokens=0,
        )
    seed_turn(database, user.id, "Short", "Reply")

    # When the user exports, page after page
    pages = all_pages(lambda_tasks, user)

    # Then every page fits, and joined up they are the whole export, each message once
    assert len(pages) > 3
    assert all(size <= 20_000 for size, _ in pages)
    monkeypatch.setattr(export_module, "EXPORT_PAGE_MAX_BYTES", 5 * 1024 * 1024)
    whole = export(lambda_tasks, user)
    assert whole["next_cursor"] is None
    assert [t for _, page in pages for t in page["tasks"]] == whole["tasks"]
    joined: dict[str, dict[str, Any]] = {}
    for _, page in pages:
        for conversation in page["conversations"]:
            if conversation["id"] in joined:
                joined[conversation["id"]]["messages"] += conversation["messages"]
            else:
                joined[conversation["id"]] = conversation
    assert list(joined.values()) == whole["conversations"]
    assert [len(c["messages"]) for c in whole["conversations"]] == [14, 2]
    # (the long conversation was split across pages)
    assert sum(1 for _, p in pages for c in p["conversations"] if c["id"] == str(long)) > 1


@pytest.mark.parametrize(
    "cursor",
    [
        "nonsense",
        base64.urlsafe_b64encode(b'{"task": -1}').decode(),
        base64.urlsafe_b64encode(b'{"conversation": ["x", "y"], "item": [1, 2]}').decode(),
        base64.urlsafe_b64encode(json.dumps({"task": "1"}).encode()).decode(),
        "x" * 400,
    ],
)
def test_a_cursor_the_api_did_not_give_is_422(tasks_api, user, cursor):
    response = tasks_api.get("/api/export", params={"cursor": cursor}, headers=user.headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert len(response.text) < 1000
