"""relay retries, per-task event sequence, retention indexes, outbox autovacuum

Revision ID: 0007_relay_retries
Revises: 0009_pending_actions_undo
Create Date: 2026-12-03 18:00:00.000000

Expand only: the release already running keeps working against this schema.
- `tasks.event_sequence`: the sequence number of the task's latest event, bumped by the statement
  that changes the task (an existing task counts as having had its creation event, 1). A NOT NULL
  column with a constant default is a catalog change, not a table rewrite.
- `task_events.sequence`, `next_attempt_at` (backoff), `failed_at` (parked): nullable, no rewrite.
- Indexes built CONCURRENTLY (task_events and chat tables take writes on every task change and
  chat turn), outside the migration's transaction; an INVALID index a failed build left behind is
  dropped first, so the migration can simply run again.
- The outbox churns (inserted, claimed, settled, deleted within days): vacuum and analyze it after
  a fixed share of changes rather than PostgreSQL's 20% of a table that may hold millions of rows,
  and leave page room so that a claim (which touches no indexed column) is a HOT update.

`ix_task_events_unrelayed` is kept for the previous release's relay; a later (contract) migration
drops it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from online_ddl import create_indexes, drop_indexes, outside_a_transaction

revision: str = "0007_relay_retries"
down_revision: str | None = "0009_pending_actions_undo"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "relayed_at IS NULL AND failed_at IS NULL"
HEAD_PENDING = "COALESCE(relayed_at, failed_at) IS NULL"
INDEXES = {
    # The relay's claim: pending events, oldest first.
    "ix_task_events_pending": f"task_events (id) WHERE {PENDING}",
    # Head of line: a task's earliest pending event. Its predicate is spelled differently from
    # ix_task_events_pending's on purpose: the relay's head-of-line subquery matches only this
    # index, whatever the statistics say (with stale ones it was served by the other one, scanning
    # every pending event before the task's).
    "ix_task_events_task_pending": f"task_events (task_id, id) WHERE {HEAD_PENDING}",
    # Retention: relayed or parked events by when they were settled.
    "ix_task_events_settled": (
        "task_events ((COALESCE(relayed_at, failed_at))) "
        "WHERE relayed_at IS NOT NULL OR failed_at IS NOT NULL"
    ),
    "ix_chat_turns_created": "chat_turns (created_at)",
    "ix_chat_usage_day": "chat_usage (day)",
}
OUTBOX_STORAGE = {
    "fillfactor": "90",
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_insert_scale_factor": "0.01",
    "autovacuum_vacuum_insert_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.01",
    "autovacuum_analyze_threshold": "1000",
}


def upgrade() -> None:
    # The ALTERs take a brief exclusive lock on tasks and task_events: queued behind a long
    # transaction, they would hold up every write to them; fail instead, and run it again.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column(
        "tasks",
        sa.Column("event_sequence", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
    )
    op.add_column("task_events", sa.Column("sequence", sa.BigInteger(), nullable=True))
    op.add_column(
        "task_events", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("task_events", sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
    settings = ", ".join(f"{name} = {value}" for name, value in OUTBOX_STORAGE.items())
    op.execute(f"ALTER TABLE task_events SET ({settings})")
    with outside_a_transaction():
        create_indexes(INDEXES)


def downgrade() -> None:
    with outside_a_transaction():
        drop_indexes(INDEXES)
    op.execute(f"ALTER TABLE task_events RESET ({', '.join(OUTBOX_STORAGE)})")
    op.drop_column("task_events", "failed_at")
    op.drop_column("task_events", "next_attempt_at")
    op.drop_column("task_events", "sequence")
    op.drop_column("tasks", "event_sequence")
