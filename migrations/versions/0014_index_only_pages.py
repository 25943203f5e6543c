"""the list's expression indexes include the column their key is computed from

Revision ID: 0014_index_only_pages
Revises: 0013_task_counts

An offset page skips its rows as ids on the sort's index (a deferred join). PostgreSQL reads an
expression index only (no table row per skipped entry) only when every column the query names is
in the index: `COALESCE(due_date, ...)`, the priority's rank and `lower(title)` name `due_date`,
`priority` and `title`, so each of 0011's expression indexes is rebuilt with that column
INCLUDEd; and the status filter's index by creation gains the id that breaks ties. Online: each
is built concurrently under a temporary name, the old one dropped concurrently, and the new one
renamed to the old name (a brief lock on the index only); a failed build's INVALID index is
dropped before a retry, and a retry after the drop finds no old index to drop.
"""

from collections.abc import Sequence

from alembic import op
from online_ddl import create_indexes, drop_indexes, outside_a_transaction

revision: str = "0014_index_only_pages"
down_revision: str | None = "0013_task_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept equal to the models' indexes (tests/test_migrations.py compares the schemas) and, without
# their INCLUDE, to 0011's.
DUE_ASC = "COALESCE(due_date, 'infinity'::timestamptz)"
DUE_DESC = "COALESCE(due_date, '-infinity'::timestamptz) DESC"
PRIORITY_RANK = (
    "array_position(ARRAY['low'::text, 'medium'::text, 'high'::text], priority::text) DESC"
)
INCLUDED = {
    "ix_tasks_user_due_asc": (f"(user_id, {DUE_ASC}, id)", "due_date"),
    "ix_tasks_user_due_desc": (f"(user_id, {DUE_DESC}, id DESC)", "due_date"),
    "ix_tasks_user_completed_due_asc": (f"(user_id, completed, {DUE_ASC}, id)", "due_date"),
    "ix_tasks_user_completed_due_desc": (
        f"(user_id, completed, {DUE_DESC}, id DESC)",
        "due_date",
    ),
    "ix_tasks_user_priority": (f"(user_id, {PRIORITY_RANK}, id DESC)", "priority"),
    "ix_tasks_user_title": ("(user_id, lower((title)::text), id)", "title"),
}
UPGRADED = {name: f"tasks {key} INCLUDE ({column})" for name, (key, column) in INCLUDED.items()}
DOWNGRADED = {name: f"tasks {key}" for name, (key, _) in INCLUDED.items()}
# `status=` lists by creation: the tie-breaking id in the key, as ix_tasks_user_created has it.
UPGRADED["ix_tasks_user_completed_created"] = "tasks (user_id, completed, created_at DESC, id DESC)"
DOWNGRADED["ix_tasks_user_completed_created"] = "tasks (user_id, completed, created_at DESC)"


def _replace(definitions: dict[str, str]) -> None:
    for name, definition in definitions.items():
        create_indexes({f"{name}_next": definition})
        drop_indexes([name])
        op.execute(f"ALTER INDEX {name}_next RENAME TO {name}")


def upgrade() -> None:
    with outside_a_transaction():
        _replace(UPGRADED)


def downgrade() -> None:
    with outside_a_transaction():
        _replace(DOWNGRADED)
