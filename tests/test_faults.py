"""Database faults as a Lambda container sees them, through the ASGI app and the Lambda handler.

(a) The server drops the container's pooled connection between two requests (Neon suspending an
    idle compute, PgBouncer closing idle clients): the next request reconnects and succeeds.
(b) PostgreSQL restarts: the next request succeeds.
(c) PostgreSQL is down: a clean 503 with a JSON `detail` (no 500, no stack trace); once it is back,
    requests succeed again.

(a) uses the session's own test database and terminates, from an admin connection, the backends
connected to it (this process's only; the app's pooled one is checked to be among them). (b) and
(c) use a separate, throwaway embedded PostgreSQL (tests/support/throwaway_postgres.py) that the
app is pointed at with `configure(DATABASE_URL=...)`; the session's shared server is never
restarted or stopped.
"""

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.database import admin_connection, create_fresh_database, migrate

DATABASE_UNAVAILABLE = {"detail": "Database unavailable, try again shortly"}

pytestmark = pytest.mark.filterwarnings(
    "ignore:No application metrics to publish:UserWarning",
)


# --- helpers -------------------------------------------------------------------------------------


def app_backend_pid() -> int:
    """The server-side pid of the container's pooled connection, asked through the app's own
    `Database` (one connection per container by default, DB_POOL_SIZE=1)."""
    from todo_backend.core.db import get_database

    return get_database().run(
        lambda connection: connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    )


def terminate_other_backends(database_url: str) -> set[int]:
    """From a separate admin connection, terminate every other connection to this test database
    (only this process uses it) and wait until they are gone; return their pids."""
    admin = admin_connection(database_url)
    try:
        rows = admin.run(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        pids = {pid for pid, _ in rows}
        deadline = time.monotonic() + 10
        while admin.run(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(CAST(:pids AS int[]))",
            pids=sorted(pids),
        )[0][0]:
            assert time.monotonic() < deadline, "terminated backends are still listed"
            time.sleep(0.02)
        return pids
    finally:
        admin.close()


@pytest.fixture
def drop_app_connection() -> Callable[[], int]:
    """Have the server kill the app's pooled connection; returns the pid it had."""

    def drop() -> int:
        pid = app_backend_pid()
        assert pid in terminate_other_backends(os.environ["DATABASE_URL"])
        return pid

    return drop


def assert_database_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == DATABASE_UNAVAILABLE
    assert response.headers["Retry-After"] == "1"
    assert "Traceback" not in response.text


def titles(api: Any, user: Any) -> list[str]:
    response = api.get("/api/tasks", params={"sort": "title", "order": "asc"}, headers=user.headers)
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()["items"]]


def seed_conversation(database: Any, user: Any, message: str) -> str:
    from tests.support.chat import seed_turn

    return str(seed_turn(database, user.id, message, "Done."))


# --- (a) the server drops the pooled connection between requests --------------------------------


def test_a_read_succeeds_after_the_pooled_connection_was_dropped(
    tasks_api, user, task_factory, drop_app_connection
):
    # Given a user's tasks, read once so the container holds a pooled connection
    task = task_factory(user, "Buy milk", tags=["home"])
    task_factory(user, "Call mum")
    assert titles(tasks_api, user) == ["Buy milk", "Call mum"]
    # When the server terminates that connection between two requests
    killed = drop_app_connection()
    # Then the next requests reconnect and succeed, on a new backend, with the data intact
    assert titles(tasks_api, user) == ["Buy milk", "Call mum"]
    fetched = tasks_api.get(f"/api/tasks/{task.id}", headers=user.headers)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["tags"] == ["home"]
    assert app_backend_pid() != killed


def test_a_write_succeeds_once_after_the_pooled_connection_was_dropped(
    tasks_api, user, drop_app_connection
):
    # Given a user who has created one task (so the container holds a pooled connection)
    first = tasks_api.post("/api/tasks", json={"title": "First"}, headers=user.headers)
    assert first.status_code == 201, first.text
    # When the server terminates that connection and the user creates another task
    drop_app_connection()
    second = tasks_api.post(
        "/api/tasks", json={"title": "Second", "priority": "high"}, headers=user.headers
    )
    # Then it is created exactly once (the retry is only for the statement that never ran)
    assert second.status_code == 201, second.text
    assert second.json()["priority"] == "high"
    assert titles(tasks_api, user) == ["First", "Second"]


def test_an_idempotent_retry_after_a_dropped_connection_returns_the_first_task(
    tasks_api, user, drop_app_connection
):
    # Given a task created with an Idempotency-Key
    headers = {**user.headers, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    created = tasks_api.post("/api/tasks", json={"title": "Pay rent"}, headers=headers)
    assert created.status_code == 201, created.text
    # When the connection is dropped and the client retries with the same key
    drop_app_connection()
    repeated = tasks_api.post("/api/tasks", json={"title": "Pay rent"}, headers=headers)
    # Then the first task comes back and nothing new is created
    assert repeated.status_code == 200, repeated.text
    assert repeated.json()["id"] == created.json()["id"]
    assert titles(tasks_api, user) == ["Pay rent"]


@pytest.mark.parametrize(
    ("method", "suffix", "body", "expected_status", "expected_title"),
    [
        ("PUT", "", {"title": "Replaced"}, 200, "Replaced"),
        ("PATCH", "", {"title": "Patched"}, 200, "Patched"),
        ("PATCH", "/complete", {"completed": True}, 200, "Original"),
        ("DELETE", "", None, 204, None),
    ],
    ids=["put", "patch", "complete", "delete"],
)
def test_every_write_succeeds_after_the_pooled_connection_was_dropped(
    tasks_api,
    user,
    task_factory,
    drop_app_connection,
    method,
    suffix,
    body,
    expected_status,
    expected_title,
):
    # Given a task, read once so the container holds a pooled connection
    task = task_factory(user, "Original")
    assert titles(tasks_api, user) == ["Original"]
    # When the connection is dropped and the task is changed
    drop_app_connection()
    kwargs: dict[str, Any] = {"headers": user.headers}
    if body is not None:
        kwargs["json"] = body
    response = tasks_api.request(method, f"/api/tasks/{task.id}{suffix}", **kwargs)
    # Then the change is applied once
    assert response.status_code == expected_status, response.text
    assert titles(tasks_api, user) == ([expected_title] if expected_title else [])


def test_every_request_after_repeated_drops_succeeds(
    tasks_api, user, task_factory, drop_app_connection
):
    # Given a user with a task, read once (the container holds a pooled connection)
    task_factory(user, "Water plants")
    assert titles(tasks_api, user) == ["Water plants"]
    # When the connection is dropped before each of several requests
    for attempt in range(3):
        drop_app_connection()
        # Then each one reconnects and succeeds
        assert titles(tasks_api, user)[-1] == "Water plants"
        drop_app_connection()
        created = tasks_api.post(
            "/api/tasks", json={"title": f"Extra {attempt}"}, headers=user.headers
        )
        assert created.status_code == 201, created.text
    assert titles(tasks_api, user) == ["Extra 0", "Extra 1", "Extra 2", "Water plants"]


def test_conversations_are_listed_after_the_pooled_connection_was_dropped(
    chat_api, user, database, drop_app_connection
):
    # Given a user with two conversations, listed once (the container holds a connection)
    first = seed_conversation(database, user, "Add buy milk")
    second = seed_conversation(database, user, "What is due today?")
    listed = chat_api.get(f"/api/{user.id}/conversations", headers=user.headers)
    assert listed.status_code == 200, listed.text
    # When the server terminates the connection
    drop_app_connection()
    # Then the list and a conversation's messages are read on a new connection, intact
    again = chat_api.get(f"/api/{user.id}/conversations", headers=user.headers)
    assert again.status_code == 200, again.text
    assert again.json() == listed.json()
    assert [item["id"] for item in again.json()["items"]] == [second, first]
    drop_app_connection()
    messages = chat_api.get(f"/api/{user.id}/conversations/{first}/messages", headers=user.headers)
    assert messages.status_code == 200, messages.text
    assert [m["content"] for m in messages.json()["items"]] == ["Add buy milk", "Done."]


# --- (b) and (c): a throwaway PostgreSQL that may restart or stop ---------------------------------


@pytest.fixture(scope="module")
def throwaway_server() -> Iterator[Any]:
    from tests.support.throwaway_postgres import ThrowawayPostgres

    server = ThrowawayPostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def throwaway_database_url(throwaway_server: Any) -> str:
    url = create_fresh_database(throwaway_server.uri("postgres"), prefix="todo_faults")
    migrate(url)
    return url


@pytest.fixture
def faulty_database(
    throwaway_server: Any, throwaway_database_url: str, configure: Callable[..., None]
) -> Iterator[Any]:
    """The app pointed at the throwaway server (a new cold start); it is running at the start and
    the end of every test, whatever the test did to it."""
    throwaway_server.ensure_running()
    configure(DATABASE_URL=throwaway_database_url)
    try:
        yield throwaway_server
    finally:
        throwaway_server.ensure_running()


def test_requests_succeed_after_postgres_restarts(tasks_api, user, faulty_database):
    # Given a task created through the app (the container holds a pooled connection)
    created = tasks_api.post("/api/tasks", json={"title": "Survive"}, headers=user.headers)
    assert created.status_code == 201, created.text
    # When PostgreSQL restarts
    faulty_database.restart()
    # Then the next request reconnects and succeeds, and the data survived
    assert titles(tasks_api, user) == ["Survive"]
    # And writes work again
    again = tasks_api.post("/api/tasks", json={"title": "After"}, headers=user.headers)
    assert again.status_code == 201, again.text
    assert titles(tasks_api, user) == ["After", "Survive"]


def test_conversations_are_listed_after_postgres_restarts(chat_api, user, faulty_database):
    # Given a conversation, listed once through the app
    from todo_backend.core.db import get_database

    conversation_id = seed_conversation(get_database(), user, "Plan my week")
    listed = chat_api.get(f"/api/{user.id}/conversations", headers=user.headers)
    assert listed.status_code == 200, listed.text
    # When PostgreSQL restarts
    faulty_database.restart()
    # Then the list is read again, intact
    again = chat_api.get(f"/api/{user.id}/conversations", headers=user.headers)
    assert again.status_code == 200, again.text
    assert [item["id"] for item in again.json()["items"]] == [conversation_id]


def test_a_stopped_postgres_is_a_clean_503_until_it_is_back(tasks_api, user, faulty_database):
    # Given a task, read once (the container holds a pooled connection)
    created = tasks_api.post("/api/tasks", json={"title": "Keep me"}, headers=user.headers)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    # When PostgreSQL is stopped
    faulty_database.stop()
    try:
        # Then reads and writes are a clean 503 (no 500, no stack trace) with Retry-After
        assert_database_unavailable(tasks_api.get("/api/tasks", headers=user.headers))
        assert_database_unavailable(tasks_api.get(f"/api/tasks/{task_id}", headers=user.headers))
        assert_database_unavailable(
            tasks_api.post("/api/tasks", json={"title": "Lost?"}, headers=user.headers)
        )
        assert_database_unavailable(
            tasks_api.patch(f"/api/tasks/{task_id}/complete", headers=user.headers)
        )
        # And the health check, which needs no database, still answers
        assert tasks_api.get("/api/health").status_code == 200
        # And authentication still comes first
        assert tasks_api.get("/api/tasks").status_code == 401
    finally:
        # When it is started again
        faulty_database.start()
    # Then requests succeed, and nothing was written while it was down
    assert titles(tasks_api, user) == ["Keep me"]
    created_after = tasks_api.post("/api/tasks", json={"title": "Back"}, headers=user.headers)
    assert created_after.status_code == 201, created_after.text


def test_a_cold_start_while_postgres_is_down_is_a_clean_503(
    tasks_api, user, faulty_database, configure
):
    # Given PostgreSQL is stopped before the container ever connected
    faulty_database.stop()
    try:
        configure()  # a new cold start: no engine, no pooled connection
        # When the first request arrives
        response = tasks_api.get("/api/tasks", headers=user.headers)
        # Then it is a clean 503
        assert_database_unavailable(response)
    finally:
        faulty_database.start()
    # And once PostgreSQL is back, the same container serves requests
    assert titles(tasks_api, user) == []


def test_conversations_while_postgres_is_down_are_a_clean_503(chat_api, user, faulty_database):
    # Given the chat function has served a request (it holds a pooled connection)
    listed = chat_api.get(f"/api/{user.id}/conversations", headers=user.headers)
    assert listed.status_code == 200, listed.text
    conversation_id = uuid.uuid4()
    # When PostgreSQL is stopped
    faulty_database.stop()
    try:
        # Then listing and reading conversations are clean 503s
        assert_database_unavailable(
            chat_api.get(f"/api/{user.id}/conversations", headers=user.headers)
        )
        assert_database_unavailable(
            chat_api.get(
                f"/api/{user.id}/conversations/{conversation_id}/messages", headers=user.headers
            )
        )
    finally:
        faulty_database.start()
    # And after it is back, they work again
    again = chat_api.get(f"/api/{user.id}/conversations", headers=user.headers)
    assert again.status_code == 200, again.text
