"""per-user search and tag indexes (pg_trgm and btree_gin GIN indexes), built concurrently

Revision ID: 0010_search_indexes
Revises: 0005_chat_bounds

`?q=` becomes a LIKE over lower(title) / lower(description) that these indexes serve, and `?tag=`
uses a per-user GIN index instead of the global one. The indexes are built with CREATE INDEX
CONCURRENTLY (writes go on while a table of millions is indexed), which cannot run in a
transaction: each runs in an autocommit block. A build that failed leaves an INVALID index behind
with the same name; it is dropped before the build is tried again.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from alembic import op

revision: str = "0010_search_indexes"
down_revision: str | None = "0005_chat_bounds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_tasks_user_tags": "(user_id, tags)",
    "ix_tasks_user_title_trgm": "(user_id, lower((title)::text) gin_trgm_ops)",
    "ix_tasks_user_description_trgm": "(user_id, lower((description)::text) gin_trgm_ops)",
}


def _drop_if_invalid(name: str) -> None:
    op.execute(
        f"""
        DO $$ BEGIN
          IF EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                     WHERE c.relname = '{name}' AND NOT i.indisvalid) THEN
            EXECUTE 'DROP INDEX {name}';
          END IF;
        END $$
        """
    )


@contextmanager
def _outside_a_transaction() -> Iterator[None]:
    """Alembic's autocommit block. Entering it, alembic asks the connection for its isolation
    level, and pg8000 runs that query in a transaction it opens first (BEGIN; SHOW ...), still
    open when the connection switches to autocommit: end it (it holds nothing else)."""
    with op.get_context().autocommit_block():
        op.execute("ROLLBACK")
        yield


def upgrade() -> None:
    # Both extensions are on Neon's list (and in the embedded server's contrib).
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    with _outside_a_transaction():
        for name, columns in INDEXES.items():
            _drop_if_invalid(name)
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON tasks USING gin {columns}"
            )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_tasks_tags")


def downgrade() -> None:
    with _outside_a_transaction():
        _drop_if_invalid("ix_tasks_tags")
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_tasks_tags ON tasks USING gin(tags)")
        for name in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
