"""recurrence, reminders and the task event outbox

Revision ID: 0004_recurrence_reminders_events
Revises: 0003_idempotency_fingerprint
Create Date: 2026-11-24 14:56:22.873665

Backward compatible with the code already running: new nullable columns and a new table only.
The check constraints are added NOT VALID and then validated, which takes no lock that blocks
reads or writes of tasks while existing rows are checked. The partial indexes cover rows that
only the new code writes, so they are built empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_recurrence_reminders_events"
down_revision: str | None = "0003_idempotency_fingerprint"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECURRENCE_FORM = (
    "^FREQ=(DAILY|WEEKLY|MONTHLY|YEARLY)(;(INTERVAL|BYDAY|BYMONTHDAY|COUNT|UNTIL)=[0-9A-Z,+-]+)*$"
)
TASK_CHECKS = {
    "ck_tasks_recurrence_due_date": "recurrence IS NULL OR due_date IS NOT NULL",
    "ck_tasks_recurrence_form": f"recurrence ~ '{RECURRENCE_FORM}'",
    "ck_tasks_next_task_id": "next_task_id <> id",
    "ck_tasks_reminded_at": "reminded_at IS NULL OR remind_at IS NOT NULL",
}


# A timestamptz as the API writes it (pydantic's form): ISO 8601 in UTC with `Z`, microseconds
# only when there are any. Task events are built with it, in the statement that changes the task.
API_TIMESTAMP = """
CREATE FUNCTION api_timestamp(moment timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
  SELECT to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
      || CASE WHEN mod(extract(microseconds FROM moment), 1000000) = 0 THEN ''
              ELSE to_char(moment AT TIME ZONE 'UTC', '.US') END
      || 'Z'
$$
"""


def upgrade() -> None:
    op.execute(API_TIMESTAMP)
    op.add_column("tasks", sa.Column("recurrence", sa.String(length=200), nullable=True))
    op.add_column("tasks", sa.Column("next_task_id", sa.BigInteger(), nullable=True))
    op.add_column("tasks", sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
    for name, condition in TASK_CHECKS.items():
        op.execute(f"ALTER TABLE tasks ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
        op.execute(f"ALTER TABLE tasks VALIDATE CONSTRAINT {name}")
    op.create_index(
        "ix_tasks_reminders_undelivered",
        "tasks",
        ["remind_at"],
        unique=False,
        postgresql_where=sa.text("remind_at IS NOT NULL AND reminded_at IS NULL AND NOT completed"),
    )
    op.create_index(
        "ix_tasks_user_reminders",
        "tasks",
        ["user_id", "remind_at"],
        unique=False,
        postgresql_where=sa.text("remind_at IS NOT NULL AND NOT completed"),
    )

    op.create_table(
        "task_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "event_id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False
        ),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("detail_type", sa.String(length=32), nullable=False),
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("task", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("relayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.CheckConstraint(
            "detail_type IN ('Task Created', 'Task Updated', 'Task Completed', 'Task Deleted', "
            "'Task Reminder Due')",
            name="ck_task_events_detail_type",
        ),
        sa.CheckConstraint("jsonb_typeof(task) = 'object'", name="ck_task_events_task"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", name="uq_task_events_event_id"),
    )
    op.create_index(
        "ix_task_events_unrelayed",
        "task_events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("relayed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_task_events_unrelayed", table_name="task_events")
    op.drop_table("task_events")
    op.drop_index("ix_tasks_user_reminders", table_name="tasks")
    op.drop_index("ix_tasks_reminders_undelivered", table_name="tasks")
    for name in TASK_CHECKS:
        op.drop_constraint(name, "tasks", type_="check")
    op.drop_column("tasks", "reminded_at")
    op.drop_column("tasks", "remind_at")
    op.drop_column("tasks", "next_task_id")
    op.drop_column("tasks", "recurrence")
    op.execute("DROP FUNCTION api_timestamp(timestamptz)")
