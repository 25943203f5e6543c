"""Deleting what is kept only for a while, in bounded batches, by the scheduled function.

- Task events: `EVENT_RETENTION_DAYS` after they were relayed or parked (pending ones, however
  old, are never touched: they are still to be published).
- Chat turn records (`chat_turns`, with their tool call records) and usage rows (`chat_usage`):
  `CHAT_RECORD_RETENTION_DAYS` after their UTC day has ended. Conversations and messages are the
  user's data and stay.

Each statement deletes at most one batch, oldest first, found through an index on the age
(migration 0007) and named by key (`= ANY(ARRAY(...))`), so it never scans the young rows and its
plan does not depend on statistics; a run stops a table at its first short batch, after
`max_batches`, or when its time is up, and the next run goes on.
"""

import time
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from todo_backend.core.db import Database, DatabaseUnavailableError
from todo_backend.core.observability import logger

BATCH = 1000
MAX_BATCHES = 20

# The start of the UTC day `:days` days before today's: records of earlier days are due.
CUTOFF_DAY = "(now() AT TIME ZONE 'UTC')::date - CAST(:days AS integer)"

STATEMENTS = {
    "task_events": text(
        """
        DELETE FROM task_events AS e
        WHERE e.id = ANY(ARRAY(
            SELECT s.id FROM task_events AS s
            WHERE (s.relayed_at IS NOT NULL OR s.failed_at IS NOT NULL)
              AND COALESCE(s.relayed_at, s.failed_at)
                  < now() - make_interval(days => CAST(:days AS integer))
            ORDER BY COALESCE(s.relayed_at, s.failed_at)
            LIMIT :limit))
        """
    ),
    "chat_turns": text(
        f"""
        DELETE FROM chat_turns AS t
        WHERE t.id = ANY(ARRAY(
            SELECT c.id FROM chat_turns AS c
            WHERE c.created_at < ({CUTOFF_DAY})::timestamp AT TIME ZONE 'UTC'
            ORDER BY c.created_at
            LIMIT :limit))
        """
    ),
    "chat_usage": text(
        f"""
        DELETE FROM chat_usage AS u
        WHERE u.ctid = ANY(ARRAY(
            SELECT c.ctid FROM chat_usage AS c
            WHERE c.day < {CUTOFF_DAY}
            ORDER BY c.day
            LIMIT :limit))
        """
    ),
}


class Retention(NamedTuple):
    """Days each kind of record is kept (core.settings)."""

    event_days: int
    chat_record_days: int


def prune(
    db: Database,
    retention: Retention,
    *,
    batch: int = BATCH,
    max_batches: int = MAX_BATCHES,
    time_budget_seconds: float | None = None,
) -> dict[str, int]:
    """Delete what is past its retention, table by table; rows deleted per table."""
    deadline = None if time_budget_seconds is None else time.monotonic() + time_budget_seconds
    days = {
        "task_events": retention.event_days,
        "chat_turns": retention.chat_record_days,
        "chat_usage": retention.chat_record_days,
    }
    deleted: dict[str, int] = {}
    for table, statement in STATEMENTS.items():
        deleted[table] = 0
        parameters = {"days": days[table], "limit": batch}
        for _ in range(max_batches):
            if deadline is not None and time.monotonic() >= deadline:
                return deleted
            try:
                count = db.run(
                    lambda connection, s=statement, p=parameters: connection.execute(s, p).rowcount
                )
            except (DBAPIError, DatabaseUnavailableError) as error:
                # The next run tries again; what is already deleted stays deleted.
                logger.warning(
                    "retention batch failed", extra={"table": table, "error": type(error).__name__}
                )
                break
            deleted[table] += count
            if count < batch:
                break
    return deleted
