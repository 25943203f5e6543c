"""The per-user counters (`task_counts`, `tag_counts`, migration 0013) equal the aggregate of the
tasks after every kind of write, whoever makes it: the REST routes, the chat tools, a recurring
completion, an idempotent retry, a bulk `INSERT ... SELECT`, the erase, concurrent writers.

Each test compares the whole counter tables with the aggregate recomputed from `tasks` (so rows
left behind by any user fail it too), and checks the values it expects for its own user.
"""

import os
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.lambda_events import LambdaClient
from tests.support.pg_proxy import PgProxy
from todo_backend.tasks.tools import ToolContext, execute_tool

RECOMPUTED_TASK_COUNTS = """
    SELECT user_id, count(*) AS total, count(*) FILTER (WHERE completed) AS completed,
           count(*) FILTER (WHERE NOT completed AND priority = 'low') AS pending_low,
           count(*) FILTER (WHERE NOT completed AND priority = 'medium') AS pending_medium,
           count(*) FILTER (WHERE NOT completed AND priority = 'high') AS pending_high
    FROM tasks GROUP BY user_id
"""
STORED_TASK_COUNTS = (
    "SELECT user_id, total, completed, pending_low, pending_medium, pending_high FROM task_counts"
)
RECOMPUTED_TAG_COUNTS = (
    "SELECT user_id, tag, count(*) AS count"
    " FROM tasks, LATERAL (SELECT DISTINCT unnest(tags) AS tag) AS named GROUP BY user_id, tag"
)
STORED_TAG_COUNTS = "SELECT user_id, tag, count FROM tag_counts"


def run(database: Any, sql: str, **parameters: Any) -> list[dict[str, Any]]:
    with database.engine.connect() as connection:
        result = connection.execute(text(sql), parameters)
        return [dict(row._mapping) for row in result] if result.returns_rows else []


def rows(database: Any, sql: str) -> set[tuple[Any, ...]]:
    return {tuple(row.values()) for row in run(database, sql)}


def assert_counters_exact(database: Any) -> None:
    """Every counter row equals the aggregate of the tasks, and no other row exists."""
    assert rows(database, STORED_TASK_COUNTS) == rows(database, RECOMPUTED_TASK_COUNTS)
    assert rows(database, STORED_TAG_COUNTS) == rows(database, RECOMPUTED_TAG_COUNTS)


def counts_of(database: Any, user_id: str) -> dict[str, int] | None:
    found = run(
        database,
        "SELECT total, completed, pending_low, pending_medium, pending_high "
        "FROM task_counts WHERE user_id = :user_id",
        user_id=user_id,
    )
    return found[0] if found else None


def tags_of(database: Any, user_id: str) -> dict[str, int]:
    found = run(
        database,
        "SELECT tag, count FROM tag_counts WHERE user_id = :user_id ORDER BY tag",
        user_id=user_id,
    )
    return {row["tag"]: row["count"] for row in found}


def counts(total: int, completed: int = 0, low: int = 0, medium: int = 0, high: int = 0) -> dict:
    return {
        "total": total,
        "completed": completed,
        "pending_low": low,
        "pending_medium": medium,
        "pending_high": high,
    }


def create(api: Any, user: Any, **body: Any) -> dict[str, Any]:
    response = api.post("/api/tasks", json={"title": "A task", **body}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_creating_through_the_api_counts_the_task_and_its_tags(tasks_api, user, database):
    # Given a user without tasks: no counter rows
    assert counts_of(database, user.id) is None
    # When they create tasks, with tags and priorities, one of them completed
    create(tasks_api, user, tags=["home", "work"], priority="high")
    create(tasks_api, user, tags=["home"])
    create(tasks_api, user, priority="low", completed=True)
    # Then their counters hold them, and equal the recomputed aggregate
    assert counts_of(database, user.id) == counts(3, completed=1, medium=1, high=1)
    assert tags_of(database, user.id) == {"home": 2, "work": 1}
    assert_counters_exact(database)


def test_an_update_moves_the_counts_between_priorities_and_tags(tasks_api, user, database):
    # Given a task tagged home and work, of medium priority
    task = create(tasks_api, user, tags=["home", "work"])
    # When its priority and tags change
    response = tasks_api.patch(
        f"/api/tasks/{task['id']}",
        json={"priority": "low", "tags": ["work", "garden"]},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    # Then it counts as low, and "home" (now on no task) has no row any more
    assert counts_of(database, user.id) == counts(1, low=1)
    assert tags_of(database, user.id) == {"garden": 1, "work": 1}
    assert_counters_exact(database)


def test_an_update_of_uncounted_columns_leaves_the_counter_rows_untouched(
    tasks_api, user, database
):
    # Given a tagged task, and the versions of its counter rows
    task = create(tasks_api, user, tags=["home"])
    versions = "SELECT (SELECT xmin::text FROM task_counts WHERE user_id = :u) AS tasks, "
    versions += "(SELECT xmin::text FROM tag_counts WHERE user_id = :u) AS tags"
    before = run(database, versions, u=user.id)
    # When only its title and description change
    response = tasks_api.patch(
        f"/api/tasks/{task['id']}",
        json={"title": "Renamed", "description": "notes"},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    # Then no counter row was written (no lock taken on them either)
    assert run(database, versions, u=user.id) == before
    assert_counters_exact(database)


def test_toggling_moves_a_task_between_pending_and_completed(tasks_api, user, database):
    # Given a pending high-priority task
    task = create(tasks_api, user, priority="high")
    # When it is toggled done
    tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers)
    # Then it counts as completed, not pending
    assert counts_of(database, user.id) == counts(1, completed=1)
    assert_counters_exact(database)
    # When it is toggled back
    tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers)
    # Then it is pending again
    assert counts_of(database, user.id) == counts(1, high=1)
    assert_counters_exact(database)


def test_deleting_the_last_task_leaves_no_counter_rows(tasks_api, user, database):
    # Given two tagged tasks
    first = create(tasks_api, user, tags=["home"])
    second = create(tasks_api, user, tags=["home", "work"])
    # When one is deleted
    assert tasks_api.delete(f"/api/tasks/{first['id']}", headers=user.headers).status_code == 204
    # Then the counts go down
    assert counts_of(database, user.id) == counts(1, medium=1)
    assert tags_of(database, user.id) == {"home": 1, "work": 1}
    assert_counters_exact(database)
    # When the other is deleted too, Then nothing of the user is left in the counters
    assert tasks_api.delete(f"/api/tasks/{second['id']}", headers=user.headers).status_code == 204
    assert counts_of(database, user.id) is None
    assert tags_of(database, user.id) == {}
    assert_counters_exact(database)


def test_completing_a_recurring_task_counts_its_next_occurrence(tasks_api, user, database):
    # Given a daily tagged task
    task = create(
        tasks_api, user, due_date="2030-01-01T09:00:00Z", recurrence="FREQ=DAILY", tags=["gym"]
    )
    # When it is completed
    done = tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers)
    assert done.status_code == 200, done.text
    assert done.json()["next_task_id"] is not None
    # Then the user has one completed task and its pending next occurrence, both tagged
    assert counts_of(database, user.id) == counts(2, completed=1, medium=1)
    assert tags_of(database, user.id) == {"gym": 2}
    assert_counters_exact(database)


def test_an_idempotent_retry_counts_the_task_once(tasks_api, user, database):
    # Given a create with an Idempotency-Key, sent twice (the second an ON CONFLICT update)
    headers = {**user.headers, "Idempotency-Key": "retry-1"}
    for _ in range(2):
        response = tasks_api.post(
            "/api/tasks", json={"title": "Once", "tags": ["x"]}, headers=headers
        )
        assert response.status_code in (200, 201), response.text
    # Then one task is counted
    assert counts_of(database, user.id) == counts(1, medium=1)
    assert tags_of(database, user.id) == {"x": 1}
    assert_counters_exact(database)


def test_the_chat_tools_keep_the_counters(user, database):
    # Given the task tools, acting for the user as the chat and MCP functions do
    context = ToolContext(db=database, user_id=user.id)
    added = execute_tool(context, "add_task", {"title": "Water plants", "tags": ["home"]})
    task_id = added["task_id"]
    # When they change, complete and delete tasks
    updated = execute_tool(context, "update_task", {"task_id": task_id, "priority": "high"})
    assert "error" not in updated, updated
    assert counts_of(database, user.id) == counts(1, high=1)
    completed = execute_tool(context, "complete_task", {"task_id": task_id})
    assert "error" not in completed, completed
    assert counts_of(database, user.id) == counts(1, completed=1)
    assert_counters_exact(database)
    deleted = execute_tool(context, "delete_task", {"task_id": task_id})
    assert "error" not in deleted, deleted
    # Then the counters followed each change
    assert counts_of(database, user.id) is None
    assert_counters_exact(database)


def test_a_bulk_insert_select_of_several_users_is_counted(user, other_user, database):
    # Given one statement loading 1,000 tasks for two users, with tags and priorities
    run(
        database,
        """
        INSERT INTO tasks (user_id, title, completed, completed_at, priority, tags)
        SELECT CASE WHEN mod(n, 2) = 0 THEN :a ELSE :b END, 'Bulk ' || n, mod(n, 5) = 0,
               CASE WHEN mod(n, 5) = 0 THEN now() END,
               (ARRAY['low', 'medium', 'high'])[1 + mod(n, 3)], ARRAY['t' || mod(n, 7), 'all']
        FROM generate_series(1, 1000) AS n
        """,
        a=user.id,
        b=other_user.id,
    )
    # Then both users' counters equal the aggregate
    assert counts_of(database, user.id)["total"] == 500
    assert tags_of(database, other_user.id)["all"] == 500
    assert_counters_exact(database)
    # When one statement deletes a part of both users' tasks
    run(
        database,
        "DELETE FROM tasks WHERE user_id IN (:a, :b) AND title LIKE 'Bulk %3'",
        a=user.id,
        b=other_user.id,
    )
    # Then they still do
    assert_counters_exact(database)


def test_the_erase_leaves_no_counter_rows(user, other_user, database):
    from functions.tasks.app import handler

    api = LambdaClient(handler)
    # Given two users with tagged tasks
    for someone in (user, other_user):
        create(api, someone, tags=["home"])
        create(api, someone, tags=["work"], completed=True)
    # When the user's data is erased
    response = api.delete(f"/api/{user.id}/data", headers=user.headers)
    assert response.status_code == 204, response.text
    # Then no counter row of theirs is left, and the other user's are intact
    assert counts_of(database, user.id) is None
    assert tags_of(database, user.id) == {}
    assert counts_of(database, other_user.id) == counts(2, completed=1, medium=1)
    assert_counters_exact(database)


def test_concurrent_writes_of_one_user_keep_the_counters_exact(user, database):
    from todo_backend.core.db import Database, create_database_engine
    from todo_backend.tasks.models import TaskCreate, TaskUpdate
    from todo_backend.tasks.service import create_task, delete_task, set_completion, update_task

    # Given eight writers with connections of their own, acting for one user
    shared = Database(create_database_engine(os.environ["DATABASE_URL"], pool_size=8))
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(seed: int) -> None:
        chance = random.Random(seed)
        try:
            start.wait()
            for _ in range(15):
                tags = chance.sample(["a", "b", "c", "d"], chance.randint(0, 3))
                task, _ = create_task(shared, user.id, TaskCreate(title="t", tags=tags))
                choice = chance.random()
                if choice < 0.3:
                    set_completion(shared, user.id, task.id)
                elif choice < 0.6:
                    update_task(
                        shared,
                        user.id,
                        task.id,
                        TaskUpdate(priority=chance.choice(["low", "high"]), tags=["b"]),
                    )
                elif choice < 0.8:
                    delete_task(shared, user.id, task.id)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    # When they create, update, complete and delete at the same time
    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        shared.engine.dispose()
    # Then none failed (no deadlock), and the counters equal the aggregate
    assert not errors, errors
    assert counts_of(database, user.id) is not None
    assert_counters_exact(database)


def test_a_random_sequence_of_writes_keeps_the_counters_exact(tasks_api, user, database):
    # Given a random sequence of creates, updates, toggles and deletes (a fixed seed)
    chance = random.Random(25)
    ids: list[int] = []
    for step in range(60):
        action = chance.choice(["create", "create", "update", "toggle", "delete", "put"])
        if action == "create" or not ids:
            body = {
                "tags": chance.sample(["a", "b", "c", "é", "Z"], chance.randint(0, 3)),
                "priority": chance.choice(["low", "medium", "high"]),
                "completed": chance.random() < 0.3,
            }
            ids.append(create(tasks_api, user, **body)["id"])
            continue
        task_id = chance.choice(ids)
        if action == "update":
            body = chance.choice(
                [{"tags": chance.sample(["a", "b", "c"], 2)}, {"priority": "high"}, {"title": "x"}]
            )
            response = tasks_api.patch(f"/api/tasks/{task_id}", json=body, headers=user.headers)
        elif action == "put":
            response = tasks_api.put(
                f"/api/tasks/{task_id}", json={"title": "Replaced"}, headers=user.headers
            )
        elif action == "toggle":
            response = tasks_api.patch(f"/api/tasks/{task_id}/complete", headers=user.headers)
        else:
            response = tasks_api.delete(f"/api/tasks/{task_id}", headers=user.headers)
            ids.remove(task_id)
        assert response.status_code in (200, 204), (step, action, response.text)
        # Then after each write the counters equal the aggregate
        assert_counters_exact(database)


@pytest.mark.parametrize("status", ["all", "pending", "completed"])
def test_the_unfiltered_lists_total_is_the_count_of_the_users_tasks(
    tasks_api, user, database, status
):
    # Given a user with 3 pending and 2 completed tasks
    for completed in (False, False, False, True, True):
        create(tasks_api, user, completed=completed)
    # When they list by status only, and with a filter as well
    listed = tasks_api.get("/api/tasks", params={"status": status}, headers=user.headers)
    filtered = tasks_api.get(
        "/api/tasks", params={"status": status, "priority": "medium"}, headers=user.headers
    )
    # Then both totals are the exact counts
    expected = {"all": 5, "pending": 3, "completed": 2}[status]
    assert listed.json()["total"] == expected
    assert filtered.json()["total"] == expected


def test_a_user_without_tasks_has_zero_stats_tags_and_total(tasks_api, user):
    # Given a user who never created a task (no counter rows)
    # When they read their stats, tags and list, Then every count is zero
    stats = tasks_api.get("/api/stats", headers=user.headers).json()
    assert stats["total"] == stats["pending"] == stats["completed"] == 0
    assert stats["by_priority"] == {"low": 0, "medium": 0, "high": 0}
    assert tasks_api.get("/api/tags", headers=user.headers).json() == {"items": [], "total": 0}
    assert tasks_api.get("/api/tasks", headers=user.headers).json()["total"] == 0


def test_a_task_naming_a_tag_twice_counts_once(user, database):
    # Given a task whose array names a tag twice (only direct SQL can store that)
    run(
        database,
        "INSERT INTO tasks (user_id, title, tags) VALUES (:u, 'Twice', ARRAY['a', 'a', 'b'])",
        u=user.id,
    )
    # Then the tag counts one task, as a tag's list counts its tasks
    assert tags_of(database, user.id) == {"a": 1, "b": 1}
    assert_counters_exact(database)
    # When its tags change to name the other tag twice, Then still one each
    run(database, "UPDATE tasks SET tags = ARRAY['b', 'b'] WHERE user_id = :u", u=user.id)
    assert tags_of(database, user.id) == {"b": 1}
    assert_counters_exact(database)


def test_a_tag_filtered_lists_total_is_the_count_of_its_tasks(tasks_api, user, database):
    # Given tasks with and without the tag "home", one completed
    for tags, completed in ((["home"], False), (["home", "x"], True), (["x"], False), ([], False)):
        create(tasks_api, user, tags=tags, completed=completed)

    def total(**params: str) -> int:
        response = tasks_api.get("/api/tasks", params=params, headers=user.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] >= len(page["items"])
        return page["total"]

    # When they list by tag alone (read from the counter) and with a status (counted)
    # Then each total is the number of matching tasks, and an unknown tag's is zero
    assert total(tag="home") == 2
    assert total(tag="x") == 2
    assert total(tag="home", status="pending") == 1
    assert total(tag="nowhere") == 0
    assert total(tag="home", limit="1") == 2


@pytest.fixture
def proxied_tasks(configure: Any, database: Any) -> Iterator[tuple[LambdaClient, PgProxy]]:
    """The tasks function, cold-started with its database behind the TCP proxy."""
    with PgProxy(os.environ["DATABASE_URL"]) as proxy:
        configure(DATABASE_URL=proxy.url)
        from functions.tasks.app import handler

        yield LambdaClient(handler), proxy


# Each write, the statement the proxy loses, and the statuses a retry may answer.
LOST_WRITES = {
    "create": ("INSERT INTO tasks", (200, 201)),
    "complete": ("UPDATE tasks", (200,)),
    "delete": ("DELETE FROM tasks", (204, 404)),
}


@pytest.mark.parametrize("when", ["before", "during", "after"])
@pytest.mark.parametrize("write", sorted(LOST_WRITES))
def test_a_write_whose_statement_or_reply_was_lost_is_counted_once(
    proxied_tasks, user, database, write, when
):
    # Given a user with one tagged task
    api, proxy = proxied_tasks
    kept = api.post("/api/tasks", json={"title": "Kept", "tags": ["x"]}, headers=user.headers)
    assert kept.status_code == 201, kept.text
    task_id = kept.json()["id"]
    keyed = {**user.headers, "Idempotency-Key": f"lost-{write}-{when}"}

    def send() -> Any:
        if write == "create":
            return api.post("/api/tasks", json={"title": "New", "tags": ["x"]}, headers=keyed)
        if write == "complete":
            return api.patch(
                f"/api/tasks/{task_id}/complete", json={"completed": True}, headers=user.headers
            )
        return api.delete(f"/api/tasks/{task_id}", headers=user.headers)

    # When the write's statement (or its reply, after it committed) is lost once
    match, retry_statuses = LOST_WRITES[write]
    rule = proxy.fail(match, when=when)
    send()
    proxy.clear()
    # And the client sends it again
    retried = send()

    # Then the write is done once, and the counters equal the aggregate
    assert rule.fired == 1
    assert retried.status_code in retry_statuses, retried.text
    expected = {
        "create": (counts(2, medium=2), {"x": 2}),
        "complete": (counts(1, completed=1), {"x": 1}),
        "delete": (None, {}),
    }[write]
    assert (counts_of(database, user.id), tags_of(database, user.id)) == expected
    assert_counters_exact(database)
