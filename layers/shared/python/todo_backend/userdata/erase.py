"""Erase everything the API holds for a user, in one transaction (GDPR art. 17).

Three statements in one transaction, each with a fresh snapshot (READ COMMITTED), in an order that
closes the races with the user's own work still in flight:

1. the chat turn records (`chat_turns`, and with them `chat_tool_calls`, the pending actions and
   the undo records, by cascade). A running turn writes
   nothing without its record: each tool call's change is committed with a row that references
   the turn (a foreign key) and the finish updates the turn. A change in flight holds a lock on
   the turn's row, so this waits for it (and the next statement sees what it did); a later one
   fails on the deleted row and rolls back whole.
2. conversations (messages, and any turn claimed meanwhile, go with them), tasks, the user's
   outbox events (relayed or not: they hold task snapshots; the erase events of earlier erases
   are kept), the usage rows of earlier days, and the settings.
3. the events of a change that committed while statement 2 waited for its task's row (they name
   a task that no longer exists), and the one `User Data Deleted` event, written only when
   something was deleted: a repeat deletes and publishes nothing.

The user's counters (`task_counts`, `tag_counts`: derived from the tasks, not exported) go with
the tasks: the triggers on `tasks` delete a counter row that reaches zero, in statement 2.

Kept: today's chat usage (`chat_usage`: erasing does not reset a quota) and the running-turn
lease (`chat_leases`: it ends with its turn, which still bills its tokens). A relay run that had
claimed some of the user's events before the erase may still deliver them (at least once); it
settles nothing of the user's afterwards (the rows are gone).

A task created concurrently, after statement 2 took its snapshot, is a change made after the
erase: it stays, with its events.
"""

from typing import Any

from sqlalchemy import Connection, TextClause, text
from sqlalchemy.exc import DBAPIError

from todo_backend.core.db import Database

USER_EVENT = "User Data Deleted"
DEADLOCK = "40P01"
ERASE_ATTEMPTS = 3

# Tables whose rows carry the user's id and go whole (their children by cascade: messages and
# the turns of a conversation). tests/test_user_data.py fails until every table with a user_id is
# covered.
ERASED_TABLES = ("conversations", "tasks", "user_settings")


def _compact(sql: str) -> TextClause:
    return text(" ".join(sql.split()))


ERASE_TURNS = _compact(
    """
    WITH gone AS (DELETE FROM chat_turns WHERE user_id = :user_id RETURNING 1)
    SELECT count(*) AS deleted FROM gone
    """
)


def _erase_rest() -> TextClause:
    deletions = [
        f"{name} AS (DELETE FROM {name} WHERE user_id = :user_id RETURNING 1)"
        for name in ERASED_TABLES
    ]
    deletions += [
        "task_events AS (DELETE FROM task_events "
        "WHERE user_id = :user_id AND task_id IS NOT NULL RETURNING 1)",
        "chat_usage AS (DELETE FROM chat_usage "
        "WHERE user_id = :user_id AND day < (now() AT TIME ZONE 'UTC')::date RETURNING 1)",
    ]
    names = [*ERASED_TABLES, "task_events", "chat_usage"]
    counted = " + ".join(f"(SELECT count(*) FROM {name})" for name in names)
    return _compact(f"WITH {', '.join(deletions)} SELECT {counted} AS deleted")


ERASE_REST = _erase_rest()

ERASE_LATE_EVENTS_AND_PUBLISH = _compact(
    f"""
    WITH late AS (
        DELETE FROM task_events AS e
        WHERE e.user_id = :user_id AND e.task_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.id = e.task_id)
        RETURNING 1
    ), published AS (
        INSERT INTO task_events (user_id, task_id, detail_type, task)
        SELECT :user_id, NULL, '{USER_EVENT}', CAST('{{}}' AS jsonb)
        WHERE :deleted > 0 OR EXISTS (SELECT 1 FROM late)
        RETURNING event_id
    )
    SELECT (SELECT event_id FROM published) AS event_id
    """
)


def erase_user_data(db: Database, user_id: str) -> bool:
    """Delete everything of the user (see the module's docstring); whether anything was."""
    for attempt in range(1, ERASE_ATTEMPTS + 1):
        try:
            return _erase_once(db, user_id)
        except DBAPIError as error:
            # Erasing locks the turns first and the tasks next; a tool call in flight locks its
            # task first and the turn next (its record's foreign key). PostgreSQL breaks such a
            # deadlock by failing one transaction: when it is the erase, nothing was done, and it
            # runs again (the tool call has committed or failed by then).
            if _sqlstate(error) != DEADLOCK or attempt == ERASE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _sqlstate(error: DBAPIError) -> str | None:
    args = getattr(error.orig, "args", ())
    return args[0].get("C") if args and isinstance(args[0], dict) else None


def _erase_once(db: Database, user_id: str) -> bool:
    def work(connection: Connection) -> bool:
        connection.exec_driver_sql("BEGIN")
        try:
            deleted = _scalar(connection, ERASE_TURNS.bindparams(user_id=user_id))
            deleted += _scalar(connection, ERASE_REST.bindparams(user_id=user_id))
            row = (
                connection.execute(
                    ERASE_LATE_EVENTS_AND_PUBLISH.bindparams(user_id=user_id, deleted=deleted)
                )
                .mappings()
                .one()
            )
            connection.exec_driver_sql("COMMIT")
        except BaseException:
            # The pool does not reset connections (autocommit): never hand one back mid-way.
            if not connection.invalidated:
                try:
                    connection.exec_driver_sql("ROLLBACK")
                except Exception:
                    connection.invalidate()
            raise
        return row["event_id"] is not None

    return db.run(work)


def _scalar(connection: Connection, statement: Any) -> int:
    return int(connection.execute(statement).scalar_one())
