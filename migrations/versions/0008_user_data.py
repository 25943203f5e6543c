"""a user's data: the erase event in the outbox, and one running chat turn per user (lease)

Revision ID: 0008_user_data
Revises: 0007_relay_retries
Create Date: 2026-12-03 17:50:00.000000

Backward compatible with the code already running: `task_events.task_id` becomes nullable (only
the new `User Data Deleted` event, which names no task, leaves it empty), the detail type check
admits that event, and `chat_leases` is a new table that only the new code reads. The new checks
are added NOT VALID and then validated, which takes no lock that blocks writes of task_events.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_user_data"
down_revision: str | None = "0007_relay_retries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TASK_TYPES = "'Task Created', 'Task Updated', 'Task Completed', 'Task Deleted', 'Task Reminder Due'"
USER_TYPES = "'User Data Deleted'"


def _replace_check(name: str, condition: str) -> None:
    op.execute(f"ALTER TABLE task_events DROP CONSTRAINT IF EXISTS {name}")
    op.execute(f"ALTER TABLE task_events ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
    op.execute(f"ALTER TABLE task_events VALIDATE CONSTRAINT {name}")


def upgrade() -> None:
    op.alter_column("task_events", "task_id", existing_type=sa.BigInteger(), nullable=True)
    _replace_check("ck_task_events_detail_type", f"detail_type IN ({TASK_TYPES}, {USER_TYPES})")
    # A task event names its task; a user event names none.
    _replace_check("ck_task_events_task_id", f"(task_id IS NULL) = (detail_type IN ({USER_TYPES}))")
    op.create_table(
        "chat_leases",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("attempt_id", sa.UUID(), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_chat_leases"),
    )


def downgrade() -> None:
    op.drop_table("chat_leases")
    op.execute("DELETE FROM task_events WHERE task_id IS NULL")
    op.execute("ALTER TABLE task_events DROP CONSTRAINT ck_task_events_task_id")
    _replace_check("ck_task_events_detail_type", f"detail_type IN ({TASK_TYPES})")
    op.alter_column("task_events", "task_id", existing_type=sa.BigInteger(), nullable=False)
