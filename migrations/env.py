"""Alembic environment: migrates the database named by DATABASE_URL (use the direct URL)."""

from alembic import context
from sqlmodel import SQLModel

import todo_backend.chat.tables
import todo_backend.tasks.models
from todo_backend.core.db import create_database_engine
from todo_backend.core.settings import load_migration_settings

# The chat tables are SQLModel tables (chat/tables.py); the task tables are SQLAlchemy Core, on
# their own metadata.
target_metadata = [SQLModel.metadata, todo_backend.tasks.models.metadata]


def run_migrations() -> None:
    url = context.config.attributes.get("database_url")
    if url is None:
        url = load_migration_settings().database_url.get_secret_value()
    engine = create_database_engine(url, autocommit=False)
    try:
        with engine.connect() as connection:
            # One transaction per migration: a migration may leave its transaction for an
            # autocommit block (CREATE INDEX CONCURRENTLY on a table of millions).
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run against a database.")
run_migrations()
