"""Undo a chat turn: every task change the turn (and its confirmed actions) made, reverted.

Each change's record (chat_tool_calls) holds the task after the change (`task`) and before it
(`before`, written by the very statement that made the change). Per task, the undo puts back the
state before the turn's first change: a created task is deleted, a deleted one restored with its
id (not its old Idempotency-Key, whose unique key a new task may hold by now), an updated or
completed one set back. A recurring task's completion also created the next occurrence: that is
deleted too. The turn's actions still waiting for a confirmation are cancelled (an action
confirmed while the undo ran, whose change its snapshot cannot see, makes it a 409: try again).

One statement decides and reverts: it locks the tasks concerned (`FOR UPDATE` returns their
latest committed versions, waiting for any change in flight), and reverts nothing if any of them
changed since the turn (its `updated_at` is not the one the turn left; a next occurrence changed
since it was created), so there is no window between the check and the revert. The undo is
stored (`chat_undos`, keyed by the turn): a repeat returns the same body and changes nothing, and
running the statement again after a lost reply is safe. Events go to the outbox as for any change.
"""

import uuid
from typing import Any

from todo_backend.chat.conversations import ACTION_SEQ_BASE, compact
from todo_backend.core.db import Database
from todo_backend.core.errors import DomainError, NotFoundError
from todo_backend.tasks.models import tasks
from todo_backend.tasks.service import task_json_sql

WINDOW_HOURS = 24

# Put back as they were (the rest: the task's identity, its creation, the idempotency key and
# `updated_at`, which the undo sets, as any change does; `reminded_at` below).
_KEPT = {"id", "user_id", "created_at", "updated_at", "idempotency_key", "idempotency_fingerprint"}
# ...and the task's event counter (`sequence`, docs/events.md), which goes on: an undo's events
# are numbered after the turn's, as any change's; a restored task's after its deletion's.
_KEPT.add("event_sequence")
_REVERTED_SET = ", ".join(
    f"{column.name} = b.{column.name}"
    for column in tasks.c
    if column.name not in _KEPT and column.name != "reminded_at"
)

UNDO = compact(
    f"""
    WITH turn AS (
        SELECT id, status, created_at > now() - make_interval(hours => :window_hours) AS open
        FROM chat_turns WHERE id = CAST(:turn_id AS uuid) AND user_id = :user_id
    ), previous AS (
        SELECT response FROM chat_undos
        WHERE turn_id = CAST(:turn_id AS uuid) AND user_id = :user_id
    ), changes AS (
        SELECT c.seq, c.kind, c.task, c.before, CAST(c.task->>'id' AS bigint) AS task_id
        FROM chat_tool_calls AS c JOIN turn ON c.turn_id = turn.id
        WHERE c.task IS NOT NULL AND c.kind IN ('created', 'updated', 'deleted')
    ), per_task AS (
        SELECT task_id,
               (array_agg(kind ORDER BY seq))[1] AS first_kind,
               (array_agg(before ORDER BY seq))[1] AS first_before,
               (array_agg(kind ORDER BY seq DESC))[1] AS last_kind,
               (array_agg(task ORDER BY seq DESC))[1] AS last_task
        FROM changes GROUP BY task_id
    ), plan AS (
        SELECT task_id,
               CASE WHEN first_kind = 'created'
                    THEN CASE WHEN last_kind <> 'deleted' THEN 'deleted' END
                    WHEN last_kind = 'deleted' THEN 'restored'
                    ELSE 'reverted' END AS action,
               first_before AS target,
               last_kind <> 'deleted' AS expect_present,
               CAST(last_task->>'event_sequence' AS bigint) AS last_sequence,
               CAST(last_task->>'updated_at' AS timestamptz) AS expect_updated_at
        FROM per_task
        WHERE first_kind = 'created' OR first_before IS NOT NULL
    ), spawned AS (
        SELECT DISTINCT CAST(c.task->>'next_task_id' AS bigint) AS task_id
        FROM changes AS c
        WHERE c.task->>'next_task_id' IS NOT NULL
          AND (c.before IS NULL OR c.before->>'next_task_id' IS NULL)
          AND CAST(c.task->>'next_task_id' AS bigint) NOT IN (SELECT task_id FROM per_task)
    ), actions AS (
        SELECT a.id, a.status, EXISTS (
                   SELECT 1 FROM changes WHERE changes.seq = :seq_base + a.seq) AS seen
        FROM chat_pending_actions AS a JOIN turn ON a.turn_id = turn.id
        FOR UPDATE OF a
    ), locked AS (
        SELECT id, created_at, updated_at FROM tasks
        WHERE user_id = :user_id
          AND id IN (SELECT task_id FROM plan UNION ALL SELECT task_id FROM spawned)
        FOR UPDATE
    ), conflicts AS (
        SELECT p.task_id FROM plan AS p LEFT JOIN locked AS l ON l.id = p.task_id
        WHERE p.action IS NOT NULL
          AND CASE WHEN p.expect_present
                   THEN l.id IS NULL OR l.updated_at IS DISTINCT FROM p.expect_updated_at
                   ELSE l.id IS NOT NULL END
        UNION
        SELECT s.task_id FROM spawned AS s JOIN locked AS l ON l.id = s.task_id
        WHERE l.updated_at <> l.created_at
    ), decision AS (
        SELECT EXISTS (SELECT 1 FROM turn WHERE open AND status <> 'running')
               AND NOT EXISTS (SELECT 1 FROM previous)
               AND NOT EXISTS (SELECT 1 FROM conflicts)
               AND NOT EXISTS (SELECT 1 FROM actions WHERE status = 'done' AND NOT seen) AS go
    ), withdrawn AS (
        UPDATE chat_pending_actions AS a SET status = 'cancelled', settled_at = now()
        FROM actions, decision
        WHERE decision.go AND a.id = actions.id AND actions.status = 'pending'
    ), todo AS (
        SELECT task_id, action, target, last_sequence FROM plan WHERE action IS NOT NULL
        UNION ALL
        SELECT s.task_id, 'deleted', CAST(NULL AS jsonb), CAST(NULL AS bigint)
        FROM spawned AS s JOIN locked AS l ON l.id = s.task_id
    ), removed AS (
        DELETE FROM tasks AS t USING todo, decision
        WHERE decision.go AND todo.action = 'deleted' AND t.id = todo.task_id
          AND t.user_id = :user_id
        RETURNING t.*
    ), reverted AS (
        UPDATE tasks AS t
        SET {_REVERTED_SET},
            reminded_at = CASE WHEN t.remind_at IS NOT DISTINCT FROM b.remind_at
                               THEN t.reminded_at ELSE b.reminded_at END,
            updated_at = now(),
            event_sequence = t.event_sequence + 1
        FROM todo CROSS JOIN decision
             CROSS JOIN LATERAL jsonb_populate_record(CAST(NULL AS tasks), todo.target) AS b
        WHERE decision.go AND todo.action = 'reverted' AND t.id = todo.task_id
          AND t.user_id = :user_id
        RETURNING t.*
    ), restored AS (
        INSERT INTO tasks
        SELECT (jsonb_populate_record(CAST(NULL AS tasks), todo.target || jsonb_build_object(
                    'idempotency_key', NULL, 'idempotency_fingerprint', NULL,
                    'updated_at', now(),
                    'event_sequence', coalesce(todo.last_sequence + 2, 1)))).*
        FROM todo, decision WHERE decision.go AND todo.action = 'restored'
        RETURNING *
    ), event AS (
        INSERT INTO task_events (user_id, task_id, detail_type, task, sequence)
        SELECT user_id, id, 'Task Deleted', {task_json_sql("removed")}, event_sequence + 1
        FROM removed
        UNION ALL
        SELECT user_id, id, 'Task Updated', {task_json_sql("reverted")}, event_sequence
        FROM reverted
        UNION ALL
        SELECT user_id, id, 'Task Created', {task_json_sql("restored")}, event_sequence
        FROM restored
    ), undone AS (
        INSERT INTO chat_undos (turn_id, user_id, response)
        SELECT CAST(:turn_id AS uuid), :user_id, jsonb_build_object(
                   'turn_id', CAST(:turn_id AS uuid),
                   'undone', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                           'task_id', task_id, 'action', action)
                                           ORDER BY task_id) FROM todo), '[]'))
        FROM decision WHERE decision.go
        ON CONFLICT DO NOTHING
        RETURNING response
    )
    SELECT EXISTS (SELECT 1 FROM turn) AS found, (SELECT open FROM turn) AS open,
           (SELECT status FROM turn) AS status, (SELECT response FROM previous) AS previous,
           (SELECT response FROM undone) AS response,
           ARRAY(SELECT task_id FROM conflicts ORDER BY task_id) AS conflicts
    """
)

READ = compact(
    """
    SELECT response FROM chat_undos
    WHERE turn_id = CAST(:turn_id AS uuid) AND user_id = :user_id
    """
)


class TurnNotFoundError(NotFoundError):
    def __init__(self) -> None:
        super().__init__("Turn not found")


class UndoExpiredError(DomainError):
    status_code = 410

    def __init__(self) -> None:
        super().__init__(f"A turn can be undone for {WINDOW_HOURS} hours; this one is older")


class UndoConflictError(DomainError):
    status_code = 409


def undo(db: Database, user_id: str, turn_id: uuid.UUID) -> dict[str, Any]:
    """Revert the turn's task changes once; a repeat returns the same body."""
    row = db.fetch_one(
        UNDO.bindparams(
            turn_id=turn_id, user_id=user_id, window_hours=WINDOW_HOURS, seq_base=ACTION_SEQ_BASE
        ),
        # Guarded by its record and by the changed-since check: running it again changes nothing.
        idempotent=True,
    )
    assert row is not None
    if row["response"] is not None:
        return dict(row["response"])
    if row["previous"] is not None:
        return dict(row["previous"])
    if not row["found"]:
        raise TurnNotFoundError()
    if not row["open"]:
        raise UndoExpiredError()
    if row["status"] == "running":
        raise UndoConflictError("The turn is still running; undo it once it has answered")
    # A concurrent undo of this turn (or this statement's own first attempt, whose reply was
    # lost) may have committed after this statement's snapshot: what it stored is the answer.
    stored = db.fetch_one(READ.bindparams(turn_id=turn_id, user_id=user_id), idempotent=True)
    if stored is not None:
        return dict(stored["response"])
    changed = ", ".join(str(task_id) for task_id in row["conflicts"])
    raise UndoConflictError(
        f"Nothing was undone: these tasks changed since the turn: {changed}"
        if changed
        # An action of the turn confirmed while this statement ran: its change was not in view.
        else "Nothing was undone: the turn changed while it was being undone; try again"
    )
