"""Pending actions: a destructive tool call of the model runs only once the user confirms it.

When the model calls `delete_task`, nothing is deleted: `propose` stores a pending action and the
call's record (its result tells the model that the user must confirm), in one statement. Then:

- `confirm` claims the action (`pending` -> `done`), deletes the task, writes its event, records
  the change in the action's turn (so an undo of that turn puts the task back) and the exchange in
  the conversation, all in one statement. The claim is an UPDATE guarded by `status = 'pending'`:
  of two confirms (or a confirm and a cancel) at once, the second waits for the first's row lock
  and then finds nothing to claim, so the statement is safe to run twice and a lost reply is
  settled by reading the action afterwards (`_settled`).
- `cancel` claims it the other way (`pending` -> `cancelled`), recorded in the conversation too.

An action expires 15 minutes after the model asked for it.
"""

import json
import uuid
from typing import Any

from todo_backend.chat.conversations import ACTION_SEQ_BASE, compact, storable
from todo_backend.core.db import Database
from todo_backend.core.errors import DomainError, NotFoundError
from todo_backend.tasks.service import task_json_sql

EXPIRY_MINUTES = 15
PENDING_STATUS = "awaiting_confirmation"
PENDING_NOTE = (
    "Nothing has been deleted yet. The app asks the user to confirm this deletion; the task is "
    "deleted only if they confirm. Tell the user that it waits for their confirmation; do not "
    "say that it was deleted."
)

PROPOSE = compact(
    """
    WITH target AS (
        SELECT id, title FROM tasks WHERE id = :task_id AND user_id = :user_id
    ), action AS (
        INSERT INTO chat_pending_actions (id, user_id, turn_id, conversation_id, seq, call_id,
                                          name, task_id, arguments, summary, expires_at)
        SELECT CAST(:action_id AS uuid), :user_id, turn.id, turn.conversation_id, :seq, :call_id,
               :name, target.id, CAST(:arguments AS jsonb), 'Delete "' || target.title || '"',
               now() + make_interval(mins => :expiry_minutes)
        FROM target, chat_turns AS turn
        WHERE turn.id = CAST(:turn_id AS uuid)
        RETURNING id, task_id, summary
    ), record AS (
        INSERT INTO chat_tool_calls (turn_id, seq, step, call_id, name, arguments, tool_plan,
                                     kind, result)
        SELECT CAST(:turn_id AS uuid), :seq, :step, :call_id, :name, CAST(:arguments AS jsonb),
               :plan, 'pending',
               jsonb_build_object('task_id', action.task_id, 'status', :pending_status,
                                  'title', target.title, 'action_id', action.id,
                                  'summary', action.summary, 'note', CAST(:note AS text))
        FROM action, target
        RETURNING result
    )
    SELECT (SELECT result FROM record) AS result
    """
)

# The conversation's record of a confirm or cancel: an assistant message carrying the call.
_MESSAGE = """
    message AS (
        INSERT INTO messages (conversation_id, role, content, tool_calls)
        SELECT conversation_id, 'assistant', content,
               jsonb_build_array(jsonb_build_object(
                   'id', :call_prefix || call_id, 'name', name, 'arguments', arguments,
                   'result', result, 'step', 0))
        FROM outcome
    ), touched AS (
        UPDATE conversations SET updated_at = now()
        WHERE id = (SELECT conversation_id FROM outcome)
    )
"""

CONFIRM = compact(
    f"""
    WITH claimed AS (
        UPDATE chat_pending_actions SET status = 'done', settled_at = now()
        WHERE id = CAST(:action_id AS uuid) AND user_id = :user_id
          AND status = 'pending' AND expires_at > now()
        RETURNING id, turn_id, conversation_id, seq, call_id, name, task_id, arguments, summary
    ), deleted AS (
        DELETE FROM tasks USING claimed
        WHERE tasks.id = claimed.task_id AND tasks.user_id = :user_id
        RETURNING tasks.*
    ), event AS (
        INSERT INTO task_events (user_id, task_id, detail_type, task, sequence)
        SELECT user_id, id, 'Task Deleted', {task_json_sql("deleted")}, event_sequence + 1
        FROM deleted
    ), outcome AS (
        SELECT claimed.*, to_jsonb(deleted) AS row,
               CASE WHEN deleted.id IS NULL
                    THEN jsonb_build_object('error', 'Task ' || claimed.task_id
                                            || ' not found: it was deleted meanwhile')
                    ELSE jsonb_build_object('task_id', deleted.id, 'status', 'deleted',
                                            'title', deleted.title) END AS result,
               CASE WHEN deleted.id IS NULL
                    THEN 'Task ' || claimed.task_id || ' was already gone.'
                    ELSE 'Deleted "' || deleted.title || '".' END AS content
        FROM claimed LEFT JOIN deleted ON true
    ), record AS (
        INSERT INTO chat_tool_calls (turn_id, seq, step, call_id, name, arguments, tool_plan,
                                     kind, task, before, result)
        SELECT turn_id, :seq_base + seq, 0, :call_prefix || call_id, name, arguments, '',
               CASE WHEN row IS NOT NULL THEN 'deleted' END, row, row, result
        FROM outcome
    ), {_MESSAGE}
    SELECT (SELECT result FROM outcome) AS result
    """
)

CANCEL = compact(
    f"""
    WITH outcome AS (
        UPDATE chat_pending_actions SET status = 'cancelled', settled_at = now()
        WHERE id = CAST(:action_id AS uuid) AND user_id = :user_id
          AND status = 'pending' AND expires_at > now()
        RETURNING conversation_id, call_id, name, arguments,
                  jsonb_build_object('task_id', task_id, 'status', 'cancelled') AS result,
                  'Cancelled: ' || summary || ' (nothing was deleted).' AS content
    ), {_MESSAGE}
    SELECT (SELECT result FROM outcome) AS result
    """
)

# Read afresh after a claim that found nothing to claim (another request settled it, or it
# expired): this snapshot sees what the other request committed.
READ = compact(
    """
    SELECT a.status, a.expires_at <= now() AS expired, c.result
    FROM chat_pending_actions AS a
    LEFT JOIN chat_tool_calls AS c ON c.turn_id = a.turn_id AND c.seq = :seq_base + a.seq
    WHERE a.id = CAST(:action_id AS uuid) AND a.user_id = :user_id
    """
)


class ActionNotFoundError(NotFoundError):
    def __init__(self) -> None:
        super().__init__("Action not found")


class ActionSettledError(DomainError):
    """The action was settled the other way, or has expired."""

    status_code = 409


def propose(
    db: Database,
    user_id: str,
    turn_id: uuid.UUID,
    call: dict[str, Any],
    task_id: int,
) -> dict[str, Any] | None:
    """Store a pending delete of the user's task and the call's record, in one statement; the
    call's result, or None when the user has no such task (nothing is stored then)."""
    row = db.fetch_one(
        PROPOSE.bindparams(
            task_id=task_id,
            user_id=user_id,
            action_id=uuid.uuid4(),
            turn_id=turn_id,
            seq=call["seq"],
            step=call["step"],
            call_id=call["id"],
            name=call["name"],
            arguments=json.dumps(storable(call["arguments"])),
            plan=storable(call["plan"]),
            expiry_minutes=EXPIRY_MINUTES,
            pending_status=PENDING_STATUS,
            note=PENDING_NOTE,
        )
    )
    return row["result"] if row is not None else None


def confirm(db: Database, user_id: str, action_id: uuid.UUID) -> dict[str, Any]:
    """Run the action once; a repeat (or a request that lost the race) gets the same body."""
    row = db.fetch_one(
        CONFIRM.bindparams(
            action_id=action_id,
            user_id=user_id,
            seq_base=ACTION_SEQ_BASE,
            call_prefix="confirm_",
        ),
        # Guarded by the action's status: running it again changes nothing.
        idempotent=True,
    )
    if row is not None and row["result"] is not None:
        return {"id": str(action_id), "status": "done", "result": row["result"]}
    return _settled(db, user_id, action_id, "done")


def cancel(db: Database, user_id: str, action_id: uuid.UUID) -> dict[str, Any]:
    row = db.fetch_one(
        CANCEL.bindparams(action_id=action_id, user_id=user_id, call_prefix="cancel_"),
        idempotent=True,
    )
    if row is None or row["result"] is None:
        return _settled(db, user_id, action_id, "cancelled")
    return {"id": str(action_id), "status": "cancelled"}


def _settled(db: Database, user_id: str, action_id: uuid.UUID, wanted: str) -> dict[str, Any]:
    row = db.fetch_one(
        READ.bindparams(action_id=action_id, user_id=user_id, seq_base=ACTION_SEQ_BASE),
        idempotent=True,
    )
    if row is None:
        raise ActionNotFoundError()
    if row["status"] == wanted == "done":
        return {"id": str(action_id), "status": "done", "result": row["result"]}
    if row["status"] == wanted == "cancelled":
        return {"id": str(action_id), "status": "cancelled"}
    if row["status"] == "done":
        raise ActionSettledError("This action was already confirmed")
    if row["status"] == "cancelled":
        raise ActionSettledError("This action was cancelled")
    raise ActionSettledError(
        f"This action expired ({EXPIRY_MINUTES} minutes after it was asked for)"
    )
