"""Shared fixtures and helpers of the chat tests.

The app talks to a local FakeCohere through the real `cohere` SDK; tests assert on what the SDK
sent (the fake records every request) and on the database afterwards.

Import the fixture explicitly in a test module (it is registered under the name `fake_cohere`):

    from tests.support.chat import fake_cohere_fixture  # noqa: F401
"""

import asyncio
import importlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from tests.fakes.cohere_server import FakeCohere, RecordedRequest
from tests.support.tokens import make_token, new_user_id

TEST_API_KEY = "test-key"
DEFAULT_BUDGET_SECONDS = "3"
TOOL_NAMES = (
    "add_task",
    "list_tasks",
    "complete_task",
    "delete_task",
    "update_task",
    "get_stats",
)


def clear_cohere_client() -> None:
    from todo_backend.chat.assistant import get_cohere_client

    get_cohere_client.cache_clear()


@pytest.fixture(name="fake_cohere")
def fake_cohere_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCohere]:
    """A started FakeCohere that the chat function is configured to call.

    Only the settings and the Cohere client are rebuilt (a warm container whose environment
    changed): the database engine stays, which saves a connection per test. Tests that need a
    real cold start also take `configure` and call `reconfigure`.
    """
    # The app imports the SDK lazily, inside the turn's time budget; a warm container has it.
    importlib.import_module("cohere.v2.client")
    fake = FakeCohere().start()
    monkeypatch.setenv("CO_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("CO_API_URL", fake.base_url)
    monkeypatch.setenv("CHAT_TURN_BUDGET_SECONDS", DEFAULT_BUDGET_SECONDS)
    clear_settings_and_client()
    try:
        yield fake
    finally:
        fake.stop()
        monkeypatch.undo()
        clear_settings_and_client()


def clear_settings_and_client() -> None:
    """After changing the environment with monkeypatch: settings and client are read afresh."""
    from todo_backend.core.settings import get_settings

    get_settings.cache_clear()
    clear_cohere_client()


def reconfigure(configure: Callable[..., None], **variables: str | None) -> None:
    """Change the environment as a new cold start sees it, Cohere client included."""
    configure(**variables)
    clear_cohere_client()


@dataclass(frozen=True)
class ChatUser:
    """A user of its own, for tests that run several independent turns."""

    id: str = field(default_factory=new_user_id)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(self.id)}"}


# --- calling the chat function ------------------------------------------------------------------


def chat(api: Any, user: Any, message: str, conversation_id: str | None = None) -> Any:
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    return api.post(f"/api/{user.id}/chat", json=body, headers=user.headers)


def chat_ok(api: Any, user: Any, message: str, conversation_id: str | None = None) -> Any:
    """A turn that must succeed; returns the response body."""
    response = chat(api, user, message, conversation_id)
    assert response.status_code == 200, response.text
    return response.json()


def conversations_page(api: Any, user: Any, **params: Any) -> dict[str, Any]:
    response = api.get(f"/api/{user.id}/conversations", params=params or None, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def only_conversation_id(api: Any, user: Any) -> str:
    """The id of the user's one and only conversation (a failed turn returns no id)."""
    page = conversations_page(api, user)
    assert page["total"] == 1, page
    return page["items"][0]["id"]


def stored_messages(api: Any, user: Any, conversation_id: str) -> list[dict[str, Any]]:
    response = api.get(
        f"/api/{user.id}/conversations/{conversation_id}/messages", headers=user.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


# --- reading the database directly ----------------------------------------------------------------


def task_row(database: Any, task_id: int) -> dict[str, Any] | None:
    """The task as stored, whoever owns it; None when it does not exist."""
    row = database.fetch_one(text("SELECT * FROM tasks WHERE id = :id").bindparams(id=task_id))
    return dict(row) if row is not None else None


def task_rows(database: Any, user_id: str) -> list[dict[str, Any]]:
    rows = database.fetch_all(
        text("SELECT * FROM tasks WHERE user_id = :user_id ORDER BY id").bindparams(user_id=user_id)
    )
    return [dict(row) for row in rows]


def message_count(database: Any, conversation_id: str) -> int:
    row = database.fetch_one(
        text("SELECT count(*) AS n FROM messages WHERE conversation_id = :id").bindparams(
            id=uuid.UUID(conversation_id)
        )
    )
    assert row is not None
    return row["n"]


# --- reading what the SDK sent --------------------------------------------------------------------


def tool_results(request: RecordedRequest) -> dict[str, Any]:
    """The `role: tool` messages of a request: tool_call_id -> the decoded JSON content."""
    return {
        message["tool_call_id"]: json.loads(message["content"])
        for message in request.messages
        if message["role"] == "tool"
    }


def wire_call(message: dict[str, Any], index: int = 0) -> tuple[str, str, dict[str, Any]]:
    """(id, name, decoded arguments) of one tool call of an assistant message on the wire."""
    call = message["tool_calls"][index]
    assert call["type"] == "function"
    return call["id"], call["function"]["name"], json.loads(call["function"]["arguments"])


def utc_dates_around(action: Callable[[], Any]) -> tuple[Any, set[str]]:
    """Run `action`; also return the UTC dates (YYYY-MM-DD) it may have seen as today."""
    before = datetime.now(UTC)
    result = action()
    after = datetime.now(UTC)
    return result, {before.strftime("%Y-%m-%d"), after.strftime("%Y-%m-%d")}


def is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# --- seeding conversations without the model ------------------------------------------------------


def seed_turn(
    database: Any,
    user_id: str,
    message: str,
    reply: str,
    tool_calls: list[dict[str, Any]] | None = None,
    tool_plans: list[str] | None = None,
) -> uuid.UUID:
    """Store one finished turn (message and reply) as the chat function does; its conversation."""
    from todo_backend.chat import turns
    from todo_backend.core.settings import get_settings

    claim = turns.claim(database, get_settings(), user_id, None, message, None)
    assert claim.turn_id is not None and claim.conversation_id is not None, claim
    turns.finish(
        database,
        claim.turn_id,
        user_id=user_id,
        attempt_id=claim.attempt_id,
        succeeded=True,
        content=reply,
        tool_calls=tool_calls or [],
        tool_plans=tool_plans or [],
        unrecorded=[],
        recorded=[],
        response=None,
        input_tokens=0,
        output_tokens=0,
    )
    return claim.conversation_id


def in_thread(action: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `action` (e.g. a request through the Lambda handler) in a thread of its own; the
    outcome dict gets "value" or "error". Mangum asks asyncio for the thread's event loop."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            outcome["value"] = action()
        except BaseException as error:  # reported by the test
            outcome["error"] = error
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@contextmanager
def usage_row_locked(database_url: str, user_id: str, waiters: int) -> Iterator[None]:
    """Hold the user's usage row of today locked (FOR UPDATE, in a transaction of its own) while
    the block runs, then until `waiters` statements wait on a lock: every claim of the user
    waits, with the snapshot it took when it started (the first to take the user's running-turn
    lease waits on that row, the others on the lease it took). Then release it."""
    from todo_backend.core.db import create_database_engine

    engine = create_database_engine(database_url, pool_size=2, autocommit=False)
    try:
        with engine.connect() as locker, engine.connect() as watcher:
            locker.execute(
                text(
                    "INSERT INTO chat_usage (user_id, day, turns, tokens) "
                    "VALUES (:u, (now() AT TIME ZONE 'UTC')::date, 0, 0) "
                    "ON CONFLICT DO NOTHING"
                ).bindparams(u=user_id)
            )
            locker.commit()
            locker.execute(
                text("SELECT turns FROM chat_usage WHERE user_id = :u FOR UPDATE").bindparams(
                    u=user_id
                )
            )
            yield
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            deadline = time.monotonic() + 5
            while watcher.execute(waiting).scalar_one() < waiters:
                watcher.rollback()  # a fresh snapshot of pg_stat_activity
                if time.monotonic() > deadline:
                    raise AssertionError(f"fewer than {waiters} statements wait on a lock")
                time.sleep(0.01)
            time.sleep(0.05)  # (let the last one settle into its wait)
            locker.commit()
    finally:
        engine.dispose()
