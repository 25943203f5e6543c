"""indexes that match each ORDER BY of the task list (and keyset pages), built concurrently

Revision ID: 0011_list_indexes
Revises: 0006_timezones

Each sort the list offers, in either order, reads one user's rows from an index in its order
(an ORDER BY ... LIMIT that stops after a page), including `status=pending&sort=due_date`: a
btree serves an order and its exact reverse, so `due_date` (NULLs last in both orders) needs one
index per order. The due-date key is `COALESCE(due_date, '±infinity')` (NULLs last as one value)
so that a keyset page starts with one row comparison on the index. Built with CREATE INDEX
CONCURRENTLY in an autocommit block, as 0010 does; an INVALID index left by a failed build is
dropped before the build is tried again.
"""

from collections.abc import Sequence

from online_ddl import create_indexes, drop_indexes, outside_a_transaction

revision: str = "0011_list_indexes"
down_revision: str | None = "0006_timezones"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept equal to the models' LIST_INDEXES (tests/test_migrations.py compares the schemas).
DUE_ASC = "COALESCE(due_date, 'infinity'::timestamptz)"
DUE_DESC = "COALESCE(due_date, '-infinity'::timestamptz) DESC"
PRIORITY_RANK = (
    "array_position(ARRAY['low'::text, 'medium'::text, 'high'::text], priority::text) DESC"
)
INDEXES = {
    "ix_tasks_user_due_asc": f"(user_id, {DUE_ASC}, id)",
    "ix_tasks_user_due_desc": f"(user_id, {DUE_DESC}, id DESC)",
    "ix_tasks_user_completed_due_asc": f"(user_id, completed, {DUE_ASC}, id)",
    "ix_tasks_user_completed_due_desc": f"(user_id, completed, {DUE_DESC}, id DESC)",
    "ix_tasks_user_priority": f"(user_id, {PRIORITY_RANK}, id DESC)",
    "ix_tasks_user_title": "(user_id, lower((title)::text), id)",
}


def upgrade() -> None:
    with outside_a_transaction():
        create_indexes({name: f"tasks {columns}" for name, columns in INDEXES.items()})


def downgrade() -> None:
    with outside_a_transaction():
        drop_indexes(INDEXES)
