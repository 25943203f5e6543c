"""user settings (time zone), all-day due dates

Revision ID: 0006_timezones
Revises: 0008_user_data
Create Date: 2026-12-03 18:20:00

Expand only: a new table, three columns with defaults the running release never needs to write,
and a function. Existing rows: a due date at exactly 00:00:00Z was sent as a bare date (or as
that midnight, which the API could not tell apart): it becomes an all-day due date of that date.
Its instant does not change (UTC is every existing user's zone), so the running release reads
it as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_timezones"
down_revision: str | None = "0008_user_data"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# A timestamptz as the API writes it for a user in `zone` (pydantic's form): ISO 8601 local time
# with the offset at that instant (`Z` when it is zero; minutes, as pydantic writes them),
# microseconds only when there are any. Task event snapshots are built with it. The offset is
# PostgreSQL's reading of the zone; the accepted zones are ones it knows.
API_TIMESTAMP_IN_ZONE = """
CREATE FUNCTION api_timestamp(moment timestamptz, zone text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
  SELECT CASE WHEN offset_seconds = 0 THEN api_timestamp(moment) ELSE
      to_char(moment AT TIME ZONE zone, 'YYYY-MM-DD"T"HH24:MI:SS')
      || CASE WHEN mod(extract(microseconds FROM moment), 1000000) = 0 THEN ''
              ELSE to_char(moment AT TIME ZONE zone, '.US') END
      || CASE WHEN offset_seconds < 0 THEN '-' ELSE '+' END
      || to_char(abs(offset_seconds) / 3600, 'FM00') || ':'
      || to_char(abs(offset_seconds) % 3600 / 60, 'FM00')
    END
  FROM (SELECT extract(epoch FROM (moment AT TIME ZONE zone) - (moment AT TIME ZONE 'UTC'))::int
               AS offset_seconds) AS offsets
$$
"""


def upgrade() -> None:
    op.execute(API_TIMESTAMP_IN_ZONE)
    op.create_table(
        "user_settings",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.add_column(
        "tasks", sa.Column("all_day", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("tasks", sa.Column("due_on", sa.Date(), nullable=True))
    op.add_column("tasks", sa.Column("series_time", sa.Time(), nullable=True))
    op.execute(
        "UPDATE tasks SET all_day = true, due_on = (due_date AT TIME ZONE 'UTC')::date"
        " WHERE due_date IS NOT NULL AND (due_date AT TIME ZONE 'UTC')::time = '00:00:00'"
    )
    op.create_check_constraint(
        "ck_tasks_all_day",
        "tasks",
        "all_day = (due_on IS NOT NULL) AND (NOT all_day OR due_date IS NOT NULL)",
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION api_timestamp(timestamptz, text)")
    op.drop_constraint("ck_tasks_all_day", "tasks", type_="check")
    op.drop_column("tasks", "series_time")
    op.drop_column("tasks", "due_on")
    op.drop_column("tasks", "all_day")
    op.drop_table("user_settings")
