"""partial indexes for the time-dependent counts: pending tasks by due date, completed by when

Revision ID: 0012_pending_due_indexes
Revises: 0011_list_indexes

`?overdue=true`, `due=today` and the stats' overdue / due today count pending tasks by due date;
the stats' completed-in-the-last-7-days counts completed tasks by completion time. Each reads one
user's matching entries from a partial index, index only (`all_day` is included: an all-day
task is overdue from its day's end, not its instant), however many other tasks the user has.
Built concurrently, as 0010 and 0011 are.
"""

from collections.abc import Sequence

from online_ddl import create_indexes, drop_indexes, outside_a_transaction

revision: str = "0012_pending_due_indexes"
down_revision: str | None = "0011_list_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept equal to the models' indexes (tests/test_migrations.py compares the schemas).
INDEXES = {
    "ix_tasks_user_pending_due": "tasks (user_id, due_date) INCLUDE (all_day) WHERE NOT completed",
    "ix_tasks_user_completed_at": "tasks (user_id, completed_at) WHERE completed",
}


def upgrade() -> None:
    with outside_a_transaction():
        create_indexes(INDEXES)


def downgrade() -> None:
    with outside_a_transaction():
        drop_indexes(INDEXES)
