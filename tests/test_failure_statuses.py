"""The 500s of issue 9 item 3 become the right status: connections found closed at every checkout
(503), a connection lost in the middle of a write (503 that says the write may have happened), and
a far-future due date read back through a database whose time zone is not UTC."""

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError

from tests.support.database import (
    admin_connection,
    create_fresh_database,
    database_name,
    drop_database,
    migrate,
    server_url,
)

UNAVAILABLE = "Database unavailable, try again shortly"
MAY_HAVE_HAPPENED = (
    "The database connection was lost during this change, which may or may not have been"
    " applied. Check before repeating it, or repeat it with the same Idempotency-Key."
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


def titles(api: Any, user: Any) -> list[str]:
    response = api.get("/api/tasks", params={"sort": "title", "order": "asc"}, headers=user.headers)
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()["items"]]


# --- connections closed at every checkout ------------------------------------------------------


@pytest.fixture
def every_checkout_finds_a_closed_connection() -> Iterator[None]:
    """The pool's checkout check reports each connection, new ones included, as closed by the
    server (what the app's own check raises when the server keeps closing them)."""
    from todo_backend.core.db import get_database

    pool = get_database().engine.pool

    def closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        raise DisconnectionError("the server closed this connection while it was idle")

    event.listen(pool, "checkout", closed)
    try:
        yield
    finally:
        event.remove(pool, "checkout", closed)


def test_connections_closed_at_every_checkout_are_a_503_not_a_500(
    tasks_api, user, task_factory, every_checkout_finds_a_closed_connection
):
    # Given the server closes every connection (the pooled one, then each new one)
    # When a read and a write are requested
    listed = tasks_api.get("/api/tasks", headers=user.headers)
    created = tasks_api.post("/api/tasks", json={"title": "x"}, headers=user.headers)
    # Then each is a clean 503 with Retry-After
    for response in (listed, created):
        assert response.status_code == 503, response.text
        assert response.json() == {"detail": UNAVAILABLE}
        assert response.headers["Retry-After"] == "1"


def test_requests_succeed_again_once_connections_stay_open(tasks_api, user, task_factory):
    task_factory(user, "Still here")
    assert titles(tasks_api, user) == ["Still here"]


# --- a connection lost in the middle of a write --------------------------------------------------


@pytest.fixture
def lose_the_connection_of_a_blocked_write() -> Callable[[Callable[[], Any]], Any]:
    """Run `request` while the tasks table is locked by another session, so the app's statement
    waits; then terminate the app's connection while its statement runs, and return the response."""

    def run(request: Callable[[], Any]) -> Any:
        admin = admin_connection(os.environ["DATABASE_URL"])
        failures: list[BaseException] = []

        def terminate_the_waiting_write() -> None:
            try:
                deadline = time.monotonic() + 10
                while True:
                    admin.run("SELECT pg_stat_clear_snapshot()")  # a transaction caches the view
                    waiting = admin.run(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    )
                    if waiting:
                        break
                    assert time.monotonic() < deadline, "the write never reached the database"
                    time.sleep(0.01)
                for (pid,) in waiting:
                    admin.run("SELECT pg_terminate_backend(CAST(:pid AS int))", pid=pid)
            except BaseException as error:  # reported by the test below
                failures.append(error)
            finally:
                admin.run("ROLLBACK")

        try:
            admin.run("BEGIN")
            admin.run("LOCK TABLE tasks IN EXCLUSIVE MODE")
            # The request runs on this thread (the Lambda handler needs its event loop).
            terminator = threading.Thread(target=terminate_the_waiting_write)
            terminator.start()
            response = request()
            terminator.join(timeout=20)
            assert not failures, failures
            return response
        finally:
            admin.close()

    return run


def test_a_write_whose_connection_broke_is_a_503_saying_it_may_have_happened(
    tasks_api, user, task_factory, lose_the_connection_of_a_blocked_write
):
    task = task_factory(user, "Toggle me")
    cases = {
        "create without key": lambda: tasks_api.post(
            "/api/tasks", json={"title": "New"}, headers=user.headers
        ),
        "toggle": lambda: tasks_api.patch(f"/api/tasks/{task.id}/complete", headers=user.headers),
    }
    for case, request in cases.items():
        response = lose_the_connection_of_a_blocked_write(request)
        assert response.status_code == 503, (case, response.text)
        assert response.json() == {"detail": MAY_HAVE_HAPPENED}, case
        assert response.headers["Retry-After"] == "1"


def test_a_create_with_a_key_whose_connection_broke_is_retried_and_succeeds_once(
    tasks_api, user, lose_the_connection_of_a_blocked_write
):
    headers = {**user.headers, "Idempotency-Key": f"broken-{user.id}"}
    response = lose_the_connection_of_a_blocked_write(
        lambda: tasks_api.post("/api/tasks", json={"title": "Once"}, headers=headers)
    )
    assert response.status_code == 201, response.text
    assert titles(tasks_api, user) == ["Once"]


# --- a database whose time zone is not UTC -------------------------------------------------------


@pytest.fixture
def database_in_tokyo(configure: Any) -> Iterator[str]:
    """A migrated database whose default TimeZone is Asia/Tokyo (UTC+9), used by the app."""
    server = server_url()
    url = create_fresh_database(server, prefix="todo_tz")
    try:
        admin = admin_connection(server)
        try:
            admin.run(f"ALTER DATABASE \"{database_name(url)}\" SET timezone TO 'Asia/Tokyo'")
        finally:
            admin.close()
        migrate(url)
        configure(DATABASE_URL=url)
        yield url
    finally:
        from todo_backend.core.db import get_database

        if get_database.cache_info().currsize:
            get_database().engine.dispose()
            get_database.cache_clear()
        drop_database(server, url)


def test_the_latest_due_date_reads_back_in_a_database_outside_utc(
    tasks_api, user, database_in_tokyo
):
    # Given a database whose time zone is UTC+9
    direct = admin_connection(database_in_tokyo)
    try:
        assert direct.run("SHOW TimeZone") == [["Asia/Tokyo"]]
    finally:
        direct.close()
    # When a task is due at the last hour that a UTC datetime can hold
    created = tasks_api.post(
        "/api/tasks",
        json={"title": "Far away", "due_date": "9999-12-31T23:00:00Z"},
        headers=user.headers,
    )
    # Then it is created and read back unchanged, alone and in the list
    assert created.status_code == 201, created.text
    assert created.json()["due_date"] == "9999-12-31T23:00:00Z"
    fetched = tasks_api.get(f"/api/tasks/{created.json()['id']}", headers=user.headers)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["due_date"] == "9999-12-31T23:00:00Z"
    listed = tasks_api.get("/api/tasks", params={"sort": "due_date"}, headers=user.headers)
    assert listed.status_code == 200, listed.text
    assert [item["due_date"] for item in listed.json()["items"]] == ["9999-12-31T23:00:00Z"]


def test_the_app_session_is_in_utc(database):
    assert database.fetch_one(text("SELECT current_setting('TimeZone') AS zone"))["zone"] == "UTC"
