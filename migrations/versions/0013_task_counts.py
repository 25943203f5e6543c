"""per-user counters of the tasks, kept by triggers: what GET /api/stats and /api/tags read

Revision ID: 0013_task_counts
Revises: 0012_pending_due_indexes

`task_counts` (a user's tasks: all, completed, pending by priority) and `tag_counts` (a user's
tasks per tag) are changed by the statement that changes `tasks`, in its transaction: AFTER ...
FOR EACH STATEMENT triggers with transition tables add each statement's difference per user (and
per user and tag), so every writer keeps them exact without code of its own (the REST routes,
the tools, undo, erase, a bulk INSERT ... SELECT). A row that reaches zero is deleted: a user
without tasks has no counter rows (an erase leaves nothing behind). The reads then cost the same
for 100 tasks as for 100,000 (issue 25).

Backfill: the migration's transaction locks `tasks` in SHARE ROW EXCLUSIVE mode (the lock CREATE
TRIGGER takes; taken first, so that it is not upgraded from a weaker one midway), which blocks
writes of tasks, not reads, until it commits: for as long as the aggregate of every task takes
(a few seconds per million tasks). Writes that arrive meanwhile wait, then see the triggers.
With `lock_timeout`, a migration queued behind a long transaction fails (run it again) rather
than holding every write up behind it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_task_counts"
down_revision: str | None = "0012_pending_due_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "tasks_count_changes"
# One trigger per event: PostgreSQL allows transition tables on single-event triggers only.
TRIGGERS = {
    "tasks_counts_insert": "AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_rows",
    "tasks_counts_update": (
        "AFTER UPDATE ON tasks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    ),
    "tasks_counts_delete": "AFTER DELETE ON tasks REFERENCING OLD TABLE AS old_rows",
    "tasks_counts_truncate": "AFTER TRUNCATE ON tasks",
}

_COLUMNS = "user_id, completed, priority, tags"
# Each operation's changed rows, counted +1 as they are after it and -1 as they were before.
_CHANGES = {
    "INSERT": f"SELECT {_COLUMNS}, 1 AS sign FROM new_rows",
    "DELETE": f"SELECT {_COLUMNS}, -1 AS sign FROM old_rows",
    "UPDATE": (
        f"SELECT {_COLUMNS}, 1 AS sign FROM new_rows "
        f"UNION ALL SELECT {_COLUMNS}, -1 AS sign FROM old_rows"
    ),
}


def _pending(priority: str) -> str:
    return f"sum(sign) FILTER (WHERE NOT completed AND priority = '{priority}')"


def _apply(changes: str) -> str:
    """One statement: the differences per user and per (user, tag), added to the counters in
    key order (concurrent statements lock counter rows in the same order: no deadlock between
    them); an UPDATE that changed no counted column adds nothing (zero differences are left out,
    and the counter rows are not touched). It returns the keys that reached zero."""
    return f"""
    WITH changes AS ({changes}),
    task_delta AS (
        SELECT user_id, sum(sign) AS total,
               coalesce(sum(sign) FILTER (WHERE completed), 0) AS completed,
               coalesce({_pending("low")}, 0) AS pending_low,
               coalesce({_pending("medium")}, 0) AS pending_medium,
               coalesce({_pending("high")}, 0) AS pending_high
        FROM changes GROUP BY user_id
    ),
    task_upserted AS (
        INSERT INTO task_counts AS c
            (user_id, total, completed, pending_low, pending_medium, pending_high)
        SELECT * FROM task_delta
        WHERE (total, completed, pending_low, pending_medium, pending_high) <> (0, 0, 0, 0, 0)
        ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE SET
            total = c.total + EXCLUDED.total,
            completed = c.completed + EXCLUDED.completed,
            pending_low = c.pending_low + EXCLUDED.pending_low,
            pending_medium = c.pending_medium + EXCLUDED.pending_medium,
            pending_high = c.pending_high + EXCLUDED.pending_high
        RETURNING c.user_id, c.total
    ),
    tag_upserted AS (
        INSERT INTO tag_counts AS c (user_id, tag, count)
        SELECT changes.user_id, tag, sum(sign)
        -- a task counts once per tag, however often its array names it
        FROM changes, LATERAL (SELECT DISTINCT unnest(changes.tags) AS tag) AS named
        GROUP BY changes.user_id, tag
        HAVING sum(sign) <> 0
        ORDER BY changes.user_id, tag
        ON CONFLICT (user_id, tag) DO UPDATE SET count = c.count + EXCLUDED.count
        RETURNING c.user_id, c.tag, c.count
    )
    SELECT (SELECT array_agg(user_id) FROM task_upserted WHERE total = 0),
           (SELECT array_agg(user_id) FROM tag_upserted WHERE count = 0),
           (SELECT array_agg(tag) FROM tag_upserted WHERE count = 0)
    INTO emptied_users, emptied_tag_users, emptied_tags;
    """


def _function() -> str:
    branches = "\n    ELSIF ".join(
        f"TG_OP = '{operation}' THEN {_apply(changes)}" for operation, changes in _CHANGES.items()
    )
    return f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    emptied_users text[];
    emptied_tag_users text[];
    emptied_tags text[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM tag_counts;
        DELETE FROM task_counts;
        RETURN NULL;
    ELSIF {branches}
    END IF;
    -- Rows that reached zero: a statement of its own (the one above cannot see its own upserts).
    -- The upsert still holds their row locks, so nothing changed them since.
    IF emptied_users IS NOT NULL THEN
        DELETE FROM task_counts WHERE user_id = ANY (emptied_users) AND total = 0;
    END IF;
    IF emptied_tags IS NOT NULL THEN
        DELETE FROM tag_counts AS c
        USING unnest(emptied_tag_users, emptied_tags) AS e (user_id, tag)
        WHERE c.user_id = e.user_id AND c.tag = e.tag AND c.count = 0;
    END IF;
    RETURN NULL;
END
$$
"""


BACKFILL = (
    """
    INSERT INTO task_counts (user_id, total, completed, pending_low, pending_medium, pending_high)
    SELECT user_id, count(*), count(*) FILTER (WHERE completed),
           count(*) FILTER (WHERE NOT completed AND priority = 'low'),
           count(*) FILTER (WHERE NOT completed AND priority = 'medium'),
           count(*) FILTER (WHERE NOT completed AND priority = 'high')
    FROM tasks GROUP BY user_id
    """,
    """
    INSERT INTO tag_counts (user_id, tag, count)
    SELECT user_id, tag, count(*)
    FROM tasks, LATERAL (SELECT DISTINCT unnest(tags) AS tag) AS named
    GROUP BY user_id, tag
    """,
)


def _counter(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "task_counts",
        sa.Column("user_id", sa.Text(), nullable=False),
        *(
            _counter(name)
            for name in ("total", "completed", "pending_low", "pending_medium", "pending_high")
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_task_counts"),
    )
    op.create_table(
        "tag_counts",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("tag", sa.Text(collation="C"), nullable=False),
        _counter("count"),
        sa.PrimaryKeyConstraint("user_id", "tag", name="pk_tag_counts"),
    )
    op.execute(_function())
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE")
    for name, definition in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} {definition} FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        )
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON tasks")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
    op.drop_table("tag_counts")
    op.drop_table("task_counts")
