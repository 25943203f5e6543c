"""Regressions found by review and by the benchmark/fuzzing work, one test each."""

import os
import time

import pytest

from tests.support.chat import fake_cohere_fixture  # noqa: F401


@pytest.mark.parametrize("tag", ["İ" * 30, "İ" * 16])
def test_tag_that_lengthens_when_lower_cased_is_a_422_not_a_500(tasks_api, user, tag):
    # Given a tag within 30 characters that lower-cases to more than 30 ("İ" -> "i̇")
    # When it is sent
    response = tasks_api.post(
        "/api/tasks", json={"title": "t", "tags": [tag]}, headers=user.headers
    )
    # Then the client is told, instead of the database rejecting it
    assert response.status_code == 422


def test_tag_that_lower_cases_within_the_limit_is_stored_lower_case(tasks_api, user):
    response = tasks_api.post(
        "/api/tasks", json={"title": "t", "tags": ["İ" * 15]}, headers=user.headers
    )
    assert response.status_code == 201
    assert response.json()["tags"] == ["i̇" * 15]


def test_due_date_that_overflows_when_converted_to_utc_is_a_422(tasks_api, user):
    # Given the earliest representable date with a positive offset (before year 1 in UTC)
    body = {"title": "t", "due_date": "0001-01-01T00:00:00+01:00"}
    # When it is sent, Then it is a validation error, not a server error
    response = tasks_api.post("/api/tasks", json=body, headers=user.headers)
    assert response.status_code == 422


def test_datetimes_from_a_non_utc_database_session_are_returned_in_utc(tasks_api, user, configure):
    # Given a database session whose time zone is not UTC
    import os

    url = os.environ["DATABASE_URL"]
    separator = "&" if "?" in url else "?"
    configure(DATABASE_URL=f"{url}{separator}options=-c%20timezone%3DAsia/Kolkata")
    # When a task is created
    response = tasks_api.post(
        "/api/tasks", json={"title": "t", "due_date": "2026-11-30T17:00:00Z"}, headers=user.headers
    )
    # Then every datetime is in UTC with a Z offset
    task = response.json()
    assert task["due_date"] == "2026-11-30T17:00:00Z"
    assert task["created_at"].endswith("Z")


def test_overdue_false_keeps_tasks_without_a_due_date(tasks_api, user, task_factory):
    # Given a task without a due date, one overdue, one due later and one done past its date
    undated = task_factory(user, "undated")
    task_factory(user, "overdue", due_date="2020-01-01T00:00:00Z")
    later = task_factory(user, "later", due_date="2999-01-01T00:00:00Z")
    done = task_factory(user, "done", due_date="2020-01-01T00:00:00Z", completed=True)
    # When the list asks for tasks that are not overdue
    response = tasks_api.get("/api/tasks", params={"overdue": "false"}, headers=user.headers)
    # Then everything but the overdue one is listed (NULL due dates included)
    ids = {item["id"] for item in response.json()["items"]}
    assert ids == {undated.id, later.id, done.id}
    assert response.json()["total"] == 3


def test_blank_chat_message_is_a_422(chat_api, user):
    # Given a message of whitespace only, When it is sent, Then it is refused before anything runs
    response = chat_api.post(
        f"/api/{user.id}/chat", json={"message": "   \n\t "}, headers=user.headers
    )
    assert response.status_code == 422


class ResetSocket:
    """A socket file whose peer has reset the connection (ECONNRESET on the first read)."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        return len(data)

    def flush(self):
        return None

    def read(self, size):
        raise ConnectionResetError(104, "Connection reset by peer")

    def close(self):
        self.real.close()


@pytest.mark.parametrize(
    "sql",
    ["SELECT pg_backend_pid() AS pid", "SELECT pg_backend_pid() AS pid, CAST(:x AS int) AS x"],
    ids=["simple query", "with parameters"],
)
def test_read_whose_connection_resets_mid_statement_is_run_again(database, sql):
    # Given the container's pooled connection, whose socket the server has since reset
    from sqlalchemy import text

    statement = text(sql).bindparams(x=1) if ":x" in sql else text(sql)
    pid = database.fetch_one(statement)["pid"]
    with database.engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        raw._sock = ResetSocket(raw._sock)
    # When the next read runs
    row = database.fetch_one(statement, idempotent=True)
    # Then it succeeded on a new connection instead of surfacing the reset
    assert row["pid"] != pid


def test_write_whose_connection_resets_mid_statement_is_not_run_twice(tasks_api, user, database):
    # Given a task, and the container's pooled connection reset as the next statement is sent
    from sqlalchemy import text

    task = tasks_api.post("/api/tasks", json={"title": "t"}, headers=user.headers).json()
    database.fetch_one(text("SELECT 1"))
    with database.engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        raw._sock = ResetSocket(raw._sock)
    # When a toggle (not safe to repeat) meets the reset
    response = tasks_api.patch(f"/api/tasks/{task['id']}/complete", headers=user.headers)
    # Then the client is told to try again, and the toggle was not applied twice
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    after = tasks_api.get(f"/api/tasks/{task['id']}", headers=user.headers).json()
    assert after["completed"] is False


def test_connection_closed_by_the_server_while_idle_is_replaced_before_use(database):
    # Given the pooled connection, terminated by the server between two requests
    from sqlalchemy import text

    from tests.support.database import admin_connection

    pid = database.fetch_one(text("SELECT pg_backend_pid() AS pid"))["pid"]
    admin = admin_connection(os.environ["DATABASE_URL"])
    try:
        admin.run("SELECT pg_terminate_backend(:pid)", pid=pid)
    finally:
        admin.close()
    time.sleep(0.2)
    # When a write (never retried) is the next statement
    row = database.fetch_one(text("SELECT pg_backend_pid() AS pid, now() AS at"))
    # Then the dead connection was noticed at checkout, and the statement ran on a new one
    assert row["pid"] != pid


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}],
    ids=["no token", "bad token"],
)
def test_token_is_checked_before_the_body(tasks_api, chat_api, headers):
    # Given a request whose body is malformed JSON and whose token is missing or invalid
    body = {"content": "{not json", "headers": {**headers, "content-type": "application/json"}}
    # When it reaches either function
    responses = [
        tasks_api.post("/api/tasks", **body),
        chat_api.post("/api/someone/chat", **body),
    ]
    # Then the answer is 401 (API.md), not the 422 a malformed body would otherwise get first
    assert [r.status_code for r in responses] == [401, 401]
    assert all(r.headers["WWW-Authenticate"] == "Bearer" for r in responses)


def test_lone_surrogate_in_a_request_is_a_422_not_a_500(tasks_api, chat_api, user):
    # Given JSON whose string holds a lone UTF-16 surrogate (valid JSON, not valid Unicode)
    body = '{"title": "a\\ud800b"}'
    chat_body = '{"message": "hi \\ud800"}'
    headers = {**user.headers, "content-type": "application/json"}
    # When it is sent to either function
    task = tasks_api.post("/api/tasks", content=body, headers=headers)
    chat = chat_api.post(f"/api/{user.id}/chat", content=chat_body, headers=headers)
    # Then it is refused as invalid input, with FastAPI's list of errors
    assert (task.status_code, chat.status_code) == (422, 422)
    assert task.json()["detail"][0]["loc"] == ["body", "title"]


def test_what_the_model_sends_is_stored_even_with_a_lone_surrogate(chat_api, fake_cohere, user):
    from tests.fakes.cohere_server import text_reply, tool_calls_reply
    from tests.support.chat import chat_ok, stored_messages

    # Given a model whose tool arguments and reply hold a lone surrogate
    fake_cohere.script(
        tool_calls_reply(("add_task", '{"title": "milk \\ud83d"}')),
        text_reply("Done \ud83d"),
    )
    # When the user chats
    body = chat_ok(chat_api, user, "Add milk")
    # Then the turn succeeds and the assistant message, with its tool call, is stored
    stored = stored_messages(chat_api, user, body["conversation_id"])
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["tool_calls"][0]["name"] == "add_task"
    assert stored[1]["content"].startswith("Done ")
