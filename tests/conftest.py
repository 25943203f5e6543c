"""Test session set-up: a fresh migrated PostgreSQL database, tokens, and clients that reach each
app both through FastAPI's TestClient and through the Mangum handler with payload 2.0 events."""

import os
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import progress
from tests.support.database import create_fresh_database, drop_database, migrate, server_url
from tests.support.tokens import TEST_SECRET, make_token, new_user_id

CONFIG_VARIABLES = (
    "BETTER_AUTH_URL",
    "BETTER_AUTH_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "CO_API_KEY",
    "CO_API_URL",
    "COHERE_MODEL",
    "CORS_ORIGINS",
    "ALLOWED_ORIGINS",
    "OAUTH_ISSUER",
    "PUBLIC_URL",
    "DATABASE_URL_SECRET_ID",
    "BETTER_AUTH_SECRET_SECRET_ID",
    "CO_API_KEY_SECRET_ID",
)


def pytest_configure(config: pytest.Config) -> None:
    # zoneinfo reads the pinned tzdata package only, as in Lambda (template.yaml): never this
    # machine's zone files (subprocesses inherit the variable).
    os.environ["PYTHONTZPATH"] = ""
    zoneinfo.reset_tzpath(to=())
    progress.install(config)
    for name in CONFIG_VARIABLES:
        os.environ.pop(name, None)
    server = server_url()
    database_url = create_fresh_database(server)
    migrate(database_url)
    os.environ["DATABASE_URL"] = database_url
    os.environ["BETTER_AUTH_SECRET"] = TEST_SECRET
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "TodoBackendTest")
    config.stash[_DATABASES] = (server, database_url)


_DATABASES = pytest.StashKey[tuple[str, str]]()


def pytest_unconfigure(config: pytest.Config) -> None:
    databases = config.stash.get(_DATABASES, None)
    if databases is None:
        return
    from todo_backend.core.db import get_database

    if get_database.cache_info().currsize:
        get_database().engine.dispose()
    drop_database(*databases)


def clear_cached_configuration() -> None:
    from todo_backend.core.auth import get_token_verifier
    from todo_backend.core.db import get_database
    from todo_backend.core.settings import get_settings

    if get_database.cache_info().currsize:
        get_database().engine.dispose()
    for cached in (get_settings, get_token_verifier, get_database):
        cached.cache_clear()


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set environment variables for one test, as a new cold start would see them."""

    def apply(**variables: str | None) -> None:
        for name, value in variables.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        clear_cached_configuration()

    yield apply
    monkeypatch.undo()
    clear_cached_configuration()


@dataclass(frozen=True)
class User:
    id: str

    @property
    def token(self) -> str:
        return make_token(self.id)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def user() -> User:
    return User(new_user_id())


@pytest.fixture
def other_user() -> User:
    return User(new_user_id())


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AWS APIs (Secrets Manager, SSM, ...) in moto, with fake credentials."""
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


@pytest.fixture
def database() -> Any:
    from todo_backend.core.db import get_database

    return get_database()


@pytest.fixture
def task_factory(database: Any) -> Callable[..., Any]:
    """Create tasks directly through the task service (the API is what tests exercise)."""
    from todo_backend.tasks.models import TaskCreate
    from todo_backend.tasks.service import create_task

    def create(owner: User, title: str = "A task", **fields: Any) -> Any:
        task, _ = create_task(database, owner.id, TaskCreate(title=title, **fields))
        return task

    return create


def _client_for(app_module: str, kind: str) -> Any:
    import importlib

    from fastapi.testclient import TestClient

    from tests.support.lambda_events import LambdaClient

    module = importlib.import_module(app_module)
    if kind == "asgi":
        return TestClient(module.app, raise_server_exceptions=False)
    return LambdaClient(module.handler)


@pytest.fixture(params=["asgi", "lambda"])
def tasks_api(request: pytest.FixtureRequest) -> Any:
    """The tasks function, reached through TestClient and through its Lambda handler."""
    return _client_for("functions.tasks.app", request.param)


@pytest.fixture(params=["asgi", "lambda", "asgi /api/{user_id}", "lambda /api/{user_id}"])
def tasks_api_in_both_path_forms(request: pytest.FixtureRequest) -> Any:
    """The tasks function through TestClient and its Lambda handler, each with its task routes
    reached as `/api/tasks...` and as `/api/{user_id}/tasks...` (API.md "Canonical paths").

    A test module uses it for every test by overriding `tasks_api`:

        @pytest.fixture
        def tasks_api(tasks_api_in_both_path_forms):
            return tasks_api_in_both_path_forms
    """
    from tests.support.path_forms import UserPathClient

    kind, _, form = request.param.partition(" ")
    client = _client_for("functions.tasks.app", kind)
    return UserPathClient(client) if form else client


@pytest.fixture(params=["asgi", "lambda"])
def chat_api(request: pytest.FixtureRequest) -> Any:
    """The chat function, reached through TestClient and through its Lambda handler."""
    return _client_for("functions.chat.app", request.param)
