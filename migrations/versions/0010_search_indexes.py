"""per-user search and tag indexes (pg_trgm and btree_gin GIN indexes), built concurrently

Revision ID: 0010_search_indexes
Revises: 0005_chat_bounds

`?q=` becomes a LIKE over lower(title) / lower(description) that these indexes serve, and `?tag=`
uses a per-user GIN index instead of the global one. The indexes are built with CREATE INDEX
CONCURRENTLY (writes go on while a table of millions is indexed), which cannot run in a
transaction: each runs in an autocommit block. A build that failed leaves an INVALID index behind
with the same name; it is dropped before the build is tried again.
"""

from collections.abc import Sequence

from alembic import op
from online_ddl import create_indexes, drop_indexes, outside_a_transaction

revision: str = "0010_search_indexes"
down_revision: str | None = "0005_chat_bounds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_tasks_user_tags": "(user_id, tags)",
    "ix_tasks_user_title_trgm": "(user_id, lower((title)::text) gin_trgm_ops)",
    "ix_tasks_user_description_trgm": "(user_id, lower((description)::text) gin_trgm_ops)",
}


def upgrade() -> None:
    # Both extensions are on Neon's list (and in the embedded server's contrib).
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    with outside_a_transaction():
        create_indexes({name: f"tasks USING gin {columns}" for name, columns in INDEXES.items()})
        drop_indexes(["ix_tasks_tags"])


def downgrade() -> None:
    with outside_a_transaction():
        create_indexes({"ix_tasks_tags": "tasks USING gin (tags)"})
        drop_indexes(INDEXES)
