"""`POST /api/tasks` with an `Idempotency-Key` (API.md): a repeat by the same user returns the first
task with 200 and creates nothing, also when the repeats race each other."""

import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select


@pytest.fixture
def tasks_api(tasks_api_in_both_path_forms: Any) -> Any:
    """Every test of this module runs against `/api/tasks...` and `/api/{user_id}/tasks...`."""
    return tasks_api_in_both_path_forms


THREADS = 8


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def create(api: Any, user: Any, key: str | None, **fields: Any) -> Any:
    headers = dict(user.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.post("/api/tasks", json={"title": "Buy milk", **fields}, headers=headers)


def total(api: Any, user: Any) -> int:
    response = api.get("/api/tasks", headers=user.headers)
    assert response.status_code == 200
    return response.json()["total"]


def rows_with_key(database: Any, user_id: str, key: str) -> int:
    from todo_backend.tasks.service import tasks

    statement = select(func.count().label("rows")).where(
        tasks.c.user_id == user_id, tasks.c.idempotency_key == key
    )
    row = database.fetch_one(statement)
    assert row is not None
    return row["rows"]


def test_repeat_with_same_key_returns_the_first_task(tasks_api, user):
    # Given a user and a fresh idempotency key
    key = new_key()
    # When the same create is sent twice with that key
    first = create(tasks_api, user, key)
    second = create(tasks_api, user, key)
    # Then the first creates (201) and the repeat returns the same task (200)
    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Location"] == f"/api/tasks/{first.json()['id']}"
    # And only one task exists
    assert total(tasks_api, user) == 1


def test_repeat_with_a_different_body_is_422_and_creates_nothing(tasks_api, user):
    # Given a task created with a key
    key = new_key()
    first = create(tasks_api, user, key, priority="low")
    # When the key is reused with a different body
    second = create(tasks_api, user, key, title="Something else", priority="high")
    # Then it is refused, naming the header, and the original task is unchanged
    assert second.status_code == 422, second.text
    [error] = second.json()["detail"]
    assert error["loc"] == ["header", "idempotency-key"]
    assert error["type"] == "idempotency_key_reused"
    assert total(tasks_api, user) == 1
    fetched = tasks_api.get(f"/api/tasks/{first.json()['id']}", headers=user.headers)
    assert fetched.json() == first.json()


def test_same_key_for_different_users_creates_two_tasks(tasks_api, user, other_user):
    # Given two users using the same key
    key = new_key()
    # When each creates a task with it
    mine = create(tasks_api, user, key, title="Mine")
    theirs = create(tasks_api, other_user, key, title="Theirs")
    # Then both are created, separately
    assert mine.status_code == 201
    assert theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["title"] == "Theirs"
    assert total(tasks_api, user) == 1
    assert total(tasks_api, other_user) == 1
    # And each user's repeat returns their own task
    assert create(tasks_api, other_user, key, title="Theirs").json()["id"] == theirs.json()["id"]
    assert create(tasks_api, user, key, title="Mine").json()["id"] == mine.json()["id"]


def test_different_keys_or_no_key_create_separate_tasks(tasks_api, user):
    # Given a user
    # When identical bodies are posted with two keys and twice without a key
    responses = [
        create(tasks_api, user, new_key()),
        create(tasks_api, user, new_key()),
        create(tasks_api, user, None),
        create(tasks_api, user, None),
    ]
    # Then each is a new task
    assert [response.status_code for response in responses] == [201, 201, 201, 201]
    assert len({response.json()["id"] for response in responses}) == 4
    assert total(tasks_api, user) == 4


def test_key_of_255_characters_is_accepted(tasks_api, user):
    # Given a key of the maximum length
    key = "k" * 255
    # When it is used twice
    first = create(tasks_api, user, key)
    second = create(tasks_api, user, key)
    # Then it works as any key
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert total(tasks_api, user) == 1


@pytest.mark.parametrize("key", ["k" * 256, "k" * 1000], ids=["256", "1000"])
def test_key_longer_than_255_characters_is_422(tasks_api, user, key):
    # Given a user with no tasks
    # When a key that is too long is used
    response = create(tasks_api, user, key)
    # Then it is refused and nothing is created
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)
    assert total(tasks_api, user) == 0


def test_invalid_body_with_a_key_does_not_consume_the_key(tasks_api, user):
    # Given a key first used with an invalid body
    key = new_key()
    refused = create(tasks_api, user, key, title="   ")
    assert refused.status_code == 422
    # When it is used again with a valid body
    response = create(tasks_api, user, key, title="Valid now")
    # Then the task is created
    assert response.status_code == 201
    assert response.json()["title"] == "Valid now"
    assert total(tasks_api, user) == 1


# --- concurrency ---------------------------------------------------------------------------------


def run_at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads that all start together."""
    barrier = threading.Barrier(count)

    def start(index: int) -> Any:
        barrier.wait(timeout=10)
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(start, range(count)))


def test_concurrent_creates_with_one_key_create_exactly_one_task(user, database):
    # Given THREADS workers, each with its own engine and connection (as separate Lambdas would)
    from todo_backend.core.db import Database, create_database_engine
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task

    workers = [Database(create_database_engine(os.environ["DATABASE_URL"])) for _ in range(THREADS)]
    try:
        run_at_once(THREADS, lambda i: workers[i].fetch_one(select(1)))  # connect first
        for race in range(3):
            key = new_key()
            # When all create a task with the same key at the same moment
            results = run_at_once(
                THREADS,
                lambda i, key=key, race=race: create_task(
                    workers[i], user.id, TaskCreate(title=f"Race {race}"), key
                ),
            )
            # Then exactly one of them created it, and all got that same task
            created = [task for task, was_created in results if was_created]
            assert len(created) == 1, results
            assert {task.id for task, _ in results} == {created[0].id}
            assert {task.title for task, _ in results} == {created[0].title}
            # And the database holds exactly one row for the key
            assert rows_with_key(database, user.id, key) == 1
    finally:
        for worker in workers:
            worker.engine.dispose()
    # And the user has one task per race
    from todo_backend.tasks.models import TaskListQuery
    from todo_backend.tasks.service import list_tasks

    assert list_tasks(database, user.id, TaskListQuery()).total == 3


def test_concurrent_requests_with_one_key_through_the_api(user, configure):
    # Given the tasks app with a connection pool large enough to serve requests in parallel
    from fastapi.testclient import TestClient

    from functions.tasks.app import app
    from todo_backend.core.db import get_database

    configure(DB_POOL_SIZE=str(THREADS))
    database = get_database()
    clients = [TestClient(app, raise_server_exceptions=False) for _ in range(THREADS)]
    key = new_key()
    headers = {**user.headers, "Idempotency-Key": key}
    # When THREADS clients send the same create at the same moment
    responses = run_at_once(
        THREADS,
        lambda i: clients[i].post("/api/tasks", json={"title": "Attempt"}, headers=headers),
    )
    # Then one is 201, the others 200, all with the same task
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * (THREADS - 1) + [201]
    assert len({response.json()["id"] for response in responses}) == 1
    # And only one task exists
    assert rows_with_key(database, user.id, key) == 1
    listed = clients[0].get("/api/tasks", headers=user.headers).json()
    assert listed["total"] == 1
