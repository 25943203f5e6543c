"""The migrations build exactly the schema the models describe, and can be undone."""

import os

from alembic import command
from alembic.config import Config

from tests.support.database import ROOT, create_fresh_database, drop_database, migrate


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    return config


def test_models_and_migrations_agree():
    # Given the session's database, migrated to head
    # When alembic compares it with the models, Then it finds nothing to generate
    command.check(alembic_config(os.environ["DATABASE_URL"]))


def test_migrations_downgrade_to_base_and_upgrade_again():
    server = os.environ["DATABASE_URL"]
    database_url = create_fresh_database(server, prefix="todo_migrations")
    try:
        migrate(database_url)
        command.downgrade(alembic_config(database_url), "base")
        migrate(database_url)
        command.check(alembic_config(database_url))
    finally:
        drop_database(server, database_url)
