"""The record of a chat turn: claimed, its tool calls, finished; and the per-user daily usage.

A turn takes one statement to start (`claim`), one per tool call, and one to finish:

- `claim` takes the user's lease (one running turn per user: `chat_leases`), checks and counts
  the daily quota, claims the idempotency key (or takes over a failed or abandoned turn with that
  key), stores the user's message and returns the bounded history, in one statement. The lease
  is taken only if it is as the statement's snapshot saw it, and only its taker counts the turn:
  a claim that loses a race to a concurrent one (another turn, a retry of the same turn, its own
  earlier attempt still running after its reply was lost) changes nothing and runs again, with
  a fresh snapshot, to see the winner. As the lease is held from claim to finish, and `finish`
  bills the tokens as it ends it, the quota a claim reads is never stale: a turn is counted once,
  and at most one turn's tokens are billed past the daily limit. A function that died holding the
  lease holds it until its turn counts as abandoned (`until`).
- A tool call that changes a task is recorded by a `ChangeHook` in the very statement that makes
  the change (`chat_tool_calls`, keyed by turn and call number). Run twice, that statement either
  applies once or fails on the key and rolls back whole, so a lost reply is settled by running it
  again and reading the record (`run_change`).
- `finish` stores the reply (or the failure note), the response and the billed tokens, and ends
  the lease; it is safe to run twice.
"""

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    CTE,
    Executable,
    column,
    func,
    insert,
    literal,
    literal_column,
    select,
    table,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from todo_backend.chat.conversations import (
    ACTION_SEQ_BASE,
    UNFINISHED_TURN_NOTE,
    compact,
    conversation_items_sql,
    storable,
    title_from,
)
from todo_backend.chat.models import ChatUsagePublic
from todo_backend.core.db import Database, DatabaseUnavailableError
from todo_backend.core.settings import Settings
from todo_backend.tasks.service import ChangeKind

# A running turn whose function died is taken over after its budget plus this margin (more than
# any Lambda timeout behind API Gateway's 29 s can add).
ABANDON_MARGIN_SECONDS = 30.0
HISTORY_ROWS = 50
# The keys a claimed turn's insert can collide on (chat/tables.py ChatTurn).
TURN_KEYS = ("chat_turns_pkey", "uq_chat_turns_user_key")

# The columns a tool call's record is written with (the table: chat/tables.py ChatToolCall).
RECORD_COLUMNS = ("turn_id", "seq", "step", "call_id", "name", "arguments", "tool_plan", "kind")
calls_table = table("chat_tool_calls", *map(column, (*RECORD_COLUMNS, "task", "before")))
# The changed task as it was before the statement (its snapshot; none for a create): what an undo
# puts back (chat/undo.py). (A change committed by another transaction between this statement's
# snapshot and its row lock is in `task` but not in `before`: an undo would revert it too.)
TASK_BEFORE = literal_column("(SELECT to_jsonb(t) FROM tasks AS t WHERE t.id = changed.id)")


def fingerprint(message: str, conversation_id: uuid.UUID | None) -> str:
    """What makes two requests with one idempotency key the same request."""
    payload = json.dumps({"message": message, "conversation_id": str(conversation_id or "")})
    return hashlib.sha256(payload.encode("utf-8", "replace")).hexdigest()


# The history: the newest items of the conversation, up to HISTORY_ROWS and, counted from the
# newest, CHAT_HISTORY_MAX_CHARS; an item's calls too large to replay at all are left out (its text
# is kept).
CLAIM = compact(
    f"""
    WITH existing AS (
        SELECT id, conversation_id, fingerprint, status, response, created_at, attempt_id,
               attempt_id = CAST(:turn_id AS uuid) AS mine,
               status = 'running'
                 AND started_at > now() - make_interval(secs => :abandon_seconds) AS busy,
               GREATEST(1, ceil(extract(epoch FROM started_at - now()) + CASE
                   WHEN started_at > now() - make_interval(secs => :budget_seconds)
                   THEN :budget_seconds ELSE :abandon_seconds END))::int AS busy_seconds
        FROM chat_turns
        WHERE id = CAST(:turn_id AS uuid)
           OR (user_id = :user_id AND idempotency_key = CAST(:idempotency_key AS varchar))
        ORDER BY attempt_id = CAST(:turn_id AS uuid) DESC
        LIMIT 1
    ), known AS (
        SELECT id FROM conversations
        WHERE id = CAST(:conversation_id AS uuid) AND user_id = :user_id
    ), held AS (
        SELECT attempt_id, until, version FROM chat_leases WHERE user_id = :user_id
    ), used AS (
        SELECT u.turns, u.tokens FROM chat_usage AS u
        WHERE u.user_id = :user_id AND u.day = (now() AT TIME ZONE 'UTC')::date
    ), decision AS (
        SELECT CASE
            WHEN existing.id IS NULL THEN CASE
                WHEN CAST(:conversation_id AS uuid) IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM known) THEN 'unknown'
                ELSE 'new' END
            WHEN existing.mine THEN 'mine'
            WHEN existing.fingerprint <> :fingerprint THEN 'mismatch'
            WHEN existing.status = 'succeeded' THEN 'replay'
            WHEN existing.busy THEN 'busy'
            ELSE 'resume'
        END AS action,
        CASE WHEN existing.status <> 'succeeded' THEN existing.attempt_id END AS resumable,
        NOT EXISTS (
            SELECT 1 FROM used WHERE used.turns >= :turn_limit OR used.tokens >= :token_limit
        ) AS within_quota
        FROM (SELECT 1) AS one LEFT JOIN existing ON true
    ), lease AS (
        INSERT INTO chat_leases AS l (user_id, attempt_id, until)
        SELECT :user_id, CAST(:turn_id AS uuid), now() + make_interval(secs => :abandon_seconds)
        FROM decision
        WHERE decision.action IN ('new', 'resume') AND decision.within_quota
        ON CONFLICT (user_id) DO UPDATE
        SET attempt_id = excluded.attempt_id, until = excluded.until, version = l.version + 1
        WHERE l.version = (SELECT version FROM held)
          AND (l.until <= now()
               OR l.attempt_id = (SELECT resumable FROM decision WHERE action = 'resume'))
        RETURNING l.user_id
    ), turn AS (
        INSERT INTO chat_turns (id, attempt_id, user_id, conversation_id, idempotency_key,
                                fingerprint, status)
        SELECT CAST(:turn_id AS uuid), CAST(:turn_id AS uuid), :user_id,
               coalesce(CAST(:conversation_id AS uuid), CAST(:new_conversation_id AS uuid)),
               CAST(:idempotency_key AS varchar), :fingerprint, 'running'
        FROM decision, lease WHERE decision.action = 'new'
        RETURNING id, conversation_id, created_at
    ), started AS (
        INSERT INTO conversations (id, user_id, title)
        SELECT conversation_id, :user_id, :title FROM turn
        WHERE CAST(:conversation_id AS uuid) IS NULL
    ), touched AS (
        UPDATE conversations SET updated_at = now()
        WHERE id = CAST(:conversation_id AS uuid) AND user_id = :user_id
          AND EXISTS (SELECT 1 FROM turn)
    ), asked AS (
        INSERT INTO messages (conversation_id, role, content, turn_id)
        SELECT conversation_id, 'user', :content, id FROM turn
    ), resumed AS (
        UPDATE chat_turns AS t
        SET status = 'running', started_at = now(), attempts = t.attempts + 1, finished_at = NULL,
            attempt_id = CAST(:turn_id AS uuid)
        FROM existing, decision, lease
        WHERE t.id = existing.id AND decision.action = 'resume'
          AND (t.status = 'failed'
               OR t.started_at <= now() - make_interval(secs => :abandon_seconds)
               OR t.attempt_id = CAST(:turn_id AS uuid))
        RETURNING t.id, t.conversation_id, t.created_at
    ), usage AS (
        INSERT INTO chat_usage AS u (user_id, day, turns, tokens)
        SELECT :user_id, (now() AT TIME ZONE 'UTC')::date, 1, 0
        WHERE EXISTS (SELECT 1 FROM turn) OR EXISTS (SELECT 1 FROM resumed)
        ON CONFLICT (user_id, day) DO UPDATE SET turns = u.turns + 1
    ), claimed AS (
        SELECT id, conversation_id, created_at FROM turn
        UNION ALL SELECT id, conversation_id, created_at FROM resumed
        UNION ALL SELECT id, conversation_id, created_at FROM existing WHERE mine
    )
    SELECT CASE
               WHEN decision.action NOT IN ('new', 'resume') OR EXISTS (SELECT 1 FROM lease)
               THEN decision.action
               WHEN NOT decision.within_quota THEN 'quota'
               WHEN EXISTS (SELECT 1 FROM held WHERE held.until > now()
                                AND held.attempt_id IS DISTINCT FROM decision.resumable)
               THEN 'occupied'
               ELSE 'raced' END AS action,
           EXISTS (SELECT 1 FROM lease) AS leased, existing.response, existing.busy_seconds,
           (SELECT GREATEST(1, ceil(CASE
                   WHEN held.until - now() > make_interval(secs => :margin_seconds)
                   THEN extract(epoch FROM held.until - now()) - :margin_seconds
                   ELSE extract(epoch FROM held.until - now()) END))::int
            FROM held) AS lease_seconds,
           claimed.id AS turn_id, claimed.conversation_id, history.items AS history,
           records.items AS records
    FROM decision
    LEFT JOIN existing ON true
    LEFT JOIN claimed ON true
    LEFT JOIN LATERAL (
        SELECT jsonb_agg(
                   jsonb_build_object('role', bounded.role, 'content', bounded.content,
                                      'tool_calls', bounded.tool_calls,
                                      'tool_plans', bounded.tool_plans)
                   ORDER BY bounded.created_at, bounded.id) AS items
        FROM (
            SELECT recent.*, sum(recent.size) OVER (
                       ORDER BY recent.created_at DESC, recent.id DESC) AS running_size
            FROM (
                SELECT capped.*, length(capped.content)
                         + coalesce(octet_length(capped.tool_calls::text), 0) AS size
                FROM (
                    SELECT item.id, item.role, item.content, item.tool_plans, item.created_at,
                           CASE WHEN octet_length(item.tool_calls::text) <= :history_chars
                                THEN item.tool_calls END AS tool_calls
                    FROM ({
        conversation_items_sql("claimed.conversation_id", "claimed.created_at", newest=True)
    })
                         AS item
                    ORDER BY item.created_at DESC, item.id DESC
                    LIMIT :history_rows
                ) AS capped
            ) AS recent
        ) AS bounded
        WHERE bounded.running_size <= :history_chars
    ) AS history ON true
    LEFT JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object(
                   'seq', seq, 'step', step, 'id', call_id, 'name', name,
                   'arguments', arguments, 'plan', tool_plan, 'kind', kind, 'task', task,
                   'result', result) ORDER BY seq) AS items
        FROM chat_tool_calls WHERE turn_id = claimed.id AND seq < {ACTION_SEQ_BASE}
    ) AS records ON true
    """
)

FINISH = compact(
    """
    WITH turn AS (
        UPDATE chat_turns
        SET status = :status, response = CAST(:response AS jsonb), finished_at = now(),
            input_tokens = input_tokens + :input_tokens,
            output_tokens = output_tokens + :output_tokens
        WHERE id = CAST(:turn_id AS uuid) AND status = 'running'
        RETURNING id, conversation_id, user_id
    ), released AS (
        UPDATE chat_leases
        SET attempt_id = NULL, until = now(), version = version + 1
        WHERE user_id = :user_id AND attempt_id = CAST(:attempt_id AS uuid)
        RETURNING user_id
    ), usage AS (
        INSERT INTO chat_usage AS u (user_id, day, turns, tokens)
        SELECT :user_id, (now() AT TIME ZONE 'UTC')::date, 0, :tokens
        WHERE EXISTS (SELECT 1 FROM turn) OR EXISTS (SELECT 1 FROM released)
        ON CONFLICT (user_id, day) DO UPDATE SET tokens = u.tokens + excluded.tokens
    ), conversation AS (
        UPDATE conversations SET updated_at = now()
        WHERE id = (SELECT conversation_id FROM turn)
    ), results AS (
        UPDATE chat_tool_calls AS c SET result = r.result
        FROM turn, jsonb_to_recordset(CAST(:recorded AS jsonb)) AS r(seq int, result jsonb)
        WHERE c.turn_id = turn.id AND c.seq = r.seq AND c.result IS NULL
    ), unrecorded AS (
        INSERT INTO chat_tool_calls (turn_id, seq, step, call_id, name, arguments, tool_plan,
                                     result)
        SELECT turn.id, c.seq, c.step, c.id, c.name, c.arguments, c.plan, c.result
        FROM turn, jsonb_to_recordset(CAST(:unrecorded AS jsonb))
             AS c(seq int, step int, id text, name text, arguments jsonb, plan text, result jsonb)
        ON CONFLICT DO NOTHING
    )
    INSERT INTO messages (conversation_id, role, content, tool_calls, tool_plans, turn_id)
    SELECT conversation_id, 'assistant', :content, CAST(:tool_calls AS jsonb),
           CAST(:tool_plans AS jsonb), id
    FROM turn
    WHERE :store_reply
    ON CONFLICT (turn_id) WHERE role = 'assistant' DO UPDATE
    SET content = excluded.content, tool_calls = excluded.tool_calls,
        tool_plans = excluded.tool_plans, created_at = clock_timestamp()
    RETURNING id
    """
)

# A lease taken by a resume whose turn was no longer resumable when its row was reached (changed
# after the statement's snapshot): given back at once, and the claim runs again to see the turn.
RELEASE = compact(
    """
    UPDATE chat_leases SET attempt_id = NULL, until = now(), version = version + 1
    WHERE user_id = :user_id AND attempt_id = CAST(:attempt_id AS uuid)
    """
)

READ_RECORD = compact(
    """
    SELECT name, kind, task, result FROM chat_tool_calls
    WHERE turn_id = CAST(:turn_id AS uuid) AND seq = :seq
    """
)

READ_USAGE = compact(
    """
    SELECT today.day, coalesce(u.turns, 0) AS turns, coalesce(u.tokens, 0) AS tokens
    FROM (SELECT (now() AT TIME ZONE 'UTC')::date AS day) AS today
    LEFT JOIN chat_usage AS u ON u.user_id = :user_id AND u.day = today.day
    """
)


class Claim(NamedTuple):
    """What `claim` decided. `action`: new, mine (our own claim, run again), resume, replay, busy
    (this turn runs), mismatch, unknown (no such conversation), quota (over the daily quota),
    occupied (another turn of the user runs); `turn_id` is None when no turn may run."""

    action: str
    turn_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    history: list[dict[str, Any]]
    records: list[dict[str, Any]]
    response: dict[str, Any] | None
    busy_seconds: int | None
    # This attempt's id: the holder of the user's lease while the turn runs (`finish` ends it).
    attempt_id: uuid.UUID
    # For `occupied`: when the running turn should be done (its budget's end; once past it, when
    # the turn counts as abandoned).
    lease_seconds: int | None = None


# A claim that lost the lease to a concurrent one runs again (with a fresh snapshot) at most this
# often; still losing, it is told another turn runs.
CLAIM_RACES = 3


def claim(
    db: Database,
    settings: Settings,
    user_id: str,
    conversation_id: uuid.UUID | None,
    message: str,
    idempotency_key: str | None,
) -> Claim:
    """Start (or resume) a turn in one statement. Safe to run twice: the turn id is chosen here,
    so a claim whose reply was lost is recognised as our own when run again."""
    attempt_id = uuid.uuid4()
    statement = CLAIM.bindparams(
        turn_id=attempt_id,
        new_conversation_id=uuid.uuid4(),
        user_id=user_id,
        conversation_id=conversation_id,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint(message, conversation_id),
        title=title_from(message),
        content=message,
        turn_limit=settings.chat_daily_turns,
        token_limit=settings.chat_daily_tokens,
        budget_seconds=settings.chat_turn_budget_seconds,
        abandon_seconds=settings.chat_turn_budget_seconds + ABANDON_MARGIN_SECONDS,
        margin_seconds=ABANDON_MARGIN_SECONDS,
        history_rows=HISTORY_ROWS,
        history_chars=settings.chat_history_max_chars,
        note=UNFINISHED_TURN_NOTE,
    )
    row: Any = None
    for _ in range(CLAIM_RACES):
        try:
            row = db.fetch_one(statement, idempotent=True)
        except IntegrityError as error:
            if not any(key in str(error.orig) for key in TURN_KEYS):
                raise
            # Another statement inserted the turn while this one ran: our own first attempt,
            # whose reply was lost but which ran on (a cut connection does not stop a
            # statement), or a concurrent request with the same key. The failed insert undid
            # this statement's lease and quota count; run it again to see the winner's turn.
            continue
        assert row is not None
        if row["leased"] and row["turn_id"] is None:
            db.run(
                lambda connection: connection.execute(
                    RELEASE.bindparams(user_id=user_id, attempt_id=attempt_id)
                )
            )
            continue
        if row["action"] != "raced":
            break
        # A concurrent claim (or our own earlier attempt, still running when its reply was
        # lost) changed the lease after this statement's snapshot; this one changed nothing.
    else:
        row = {**row, "action": "occupied"} if row is not None else None
    if row is None:
        raise DatabaseUnavailableError("the turn could not be claimed")
    return Claim(
        action=row["action"],
        turn_id=row["turn_id"],
        conversation_id=row["conversation_id"],
        history=list(row["history"] or []),
        records=list(row["records"] or []),
        response=row["response"],
        busy_seconds=row["busy_seconds"],
        attempt_id=attempt_id,
        lease_seconds=row["lease_seconds"],
    )


def finish(
    db: Database,
    turn_id: uuid.UUID,
    *,
    user_id: str,
    attempt_id: uuid.UUID,
    succeeded: bool,
    content: str,
    tool_calls: Sequence[dict[str, Any]],
    tool_plans: Sequence[str],
    unrecorded: Sequence[dict[str, Any]],
    recorded: Sequence[dict[str, Any]],
    response: dict[str, Any] | None,
    input_tokens: int,
    output_tokens: int,
) -> None:
    """Store the reply and the outcome of the turn, and end the user's lease (`attempt_id`: the
    claim's). The recorded calls get the results the model was sent (`recorded`: seq and
    result). A failed turn keeps a note with the calls it made (none: no note) and records every
    call, so that a retry replays them."""
    statement = FINISH.bindparams(
        turn_id=turn_id,
        user_id=user_id,
        attempt_id=attempt_id,
        status="succeeded" if succeeded else "failed",
        response=json.dumps(storable(response)) if response is not None else None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tokens=input_tokens + output_tokens,
        unrecorded=json.dumps(storable(list(unrecorded)) if not succeeded else []),
        recorded=json.dumps(storable(list(recorded))),
        content=storable(content),
        tool_calls=json.dumps(storable(list(tool_calls))) if tool_calls else None,
        tool_plans=json.dumps(storable(list(tool_plans))) if tool_plans else None,
        store_reply=succeeded or bool(tool_calls),
    )
    # Running it again after a lost reply changes nothing: the turn is no longer running.
    db.fetch_one(statement, idempotent=True)


def record_hook(
    turn_id: uuid.UUID, seq: int, step: int, call: dict[str, Any]
) -> Callable[[CTE, ChangeKind], Executable]:
    """The record of one tool call, to commit with the task change it makes (`ChangeHook`)."""

    def hook(changed: CTE, kind: ChangeKind) -> Executable:
        row = (
            select(
                literal(turn_id, PgUUID(as_uuid=True)),
                literal(seq),
                literal(step),
                literal(call["id"]),
                literal(call["name"]),
                literal(storable(call["arguments"]), JSONB),
                literal(storable(call["plan"])),
                literal(kind),
                func.to_jsonb(changed.table_valued()),
                TASK_BEFORE,
            )
            .select_from(changed)
            .limit(1)
        )
        return insert(calls_table).from_select([*RECORD_COLUMNS, "task", "before"], row)

    return hook


def read_record(db: Database, turn_id: uuid.UUID, seq: int) -> RowMapping | None:
    return db.fetch_one(READ_RECORD.bindparams(turn_id=turn_id, seq=seq), idempotent=True)


def usage(db: Database, settings: Settings, user_id: str) -> ChatUsagePublic:
    row = db.fetch_one(READ_USAGE.bindparams(user_id=user_id), idempotent=True)
    assert row is not None
    return ChatUsagePublic(
        day=row["day"],
        turns=row["turns"],
        turn_limit=settings.chat_daily_turns,
        tokens=row["tokens"],
        token_limit=settings.chat_daily_tokens,
    )


class AlreadyRecordedError(DatabaseUnavailableError):
    """The call's record exists already: an earlier attempt of the statement committed."""


class WatchedDatabase(Database):
    """The turn's database, remembering the last failure of a statement (a tool turns failures
    into `{"error": ...}` results; the turn must still know that a reply was lost)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db.engine)
        self.failure: Exception | None = None

    def run[T](self, work: Callable[[Connection], T], *, idempotent: bool = False) -> T:
        try:
            return super().run(work, idempotent=idempotent)
        except IntegrityError as error:
            if "pk_chat_tool_calls" not in str(error.orig):
                self.failure = error
                raise
            # Expected when a statement runs again after a lost reply: not a tool failure.
            self.failure = AlreadyRecordedError("the tool call is recorded already")
            raise self.failure from error
        except Exception as error:
            self.failure = error
            raise
