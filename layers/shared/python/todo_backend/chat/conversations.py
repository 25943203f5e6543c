"""Conversation storage: each operation is one statement, scoped to the conversation's owner."""

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import TextClause, text

from todo_backend.chat.models import (
    CONVERSATION_TITLE_MAX,
    ConversationPage,
    ConversationPublic,
    MessagePage,
    MessagePublic,
)
from todo_backend.core.db import Database
from todo_backend.core.errors import NotFoundError
from todo_backend.tasks.models import TaskPublic

FAILED_TURN_NOTE = (
    "Sorry, the assistant service failed before I could finish replying. "
    "Any actions listed here were already carried out."
)
# Shown for a turn that recorded tool calls but stored no reply: it is still running, or its
# function died, or its last statement was lost.
UNFINISHED_TURN_NOTE = (
    "The assistant's reply to this message was not stored (it may still be on its way). "
    "The actions listed here were carried out."
)
# A confirmed action's change is recorded in its turn's chat_tool_calls at this number plus its
# call's (chat/actions.py): beyond any call a turn makes, so it is never shown or replayed as one
# of the turn's own calls (the conversation shows it in a message of its own).
ACTION_SEQ_BASE = 1_000_000
# A page of messages stops early (fewer than `limit` items) rather than pass this many bytes of
# JSON: Lambda's response limit is 6 MB.
MESSAGE_PAGE_MAX_BYTES = 2 * 1024 * 1024


class ConversationNotFoundError(NotFoundError):
    def __init__(self) -> None:
        super().__init__("Conversation not found")


def encodable(value: Any) -> Any:
    """Text from the model that UTF-8 can encode: a lone UTF-16 surrogate (valid in JSON, not in
    Unicode) becomes "?". Applied to everything the model sends, before it is used."""
    return _map_strings(value, lambda text: text.encode("utf-8", "replace").decode("utf-8"))


def storable(value: Any) -> Any:
    """Encodable text that PostgreSQL's text and jsonb can hold: NUL becomes U+FFFD."""
    return _map_strings(encodable(value), lambda text: text.replace("\x00", "\ufffd"))


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(item, change) for item in value]
    if isinstance(value, dict):
        return {_map_strings(k, change): _map_strings(v, change) for k, v in value.items()}
    return value


def title_from(message: str) -> str:
    title = " ".join(message.split()) or "New conversation"
    if len(title) > CONVERSATION_TITLE_MAX:
        title = title[: CONVERSATION_TITLE_MAX - 1].rstrip() + "…"
    return title


def compact(sql: str) -> TextClause:
    """A statement with its layout squeezed out (no `--` comments in it): pg8000 scans every
    statement's text on each execution, and it travels on each round trip."""
    return text(" ".join(sql.split()))


def conversation_items_sql(
    conversation: str, before: str | None = None, *, newest: bool = False
) -> str:
    """The items of a conversation (`id, role, content, tool_calls, tool_plans, created_at`): its
    messages, plus, for each turn that recorded tool calls but stored no reply (its function died,
    or its last statement was lost), an assistant item with the recorded calls and `:note`.
    With `before`, only items older than that moment; with `newest`, only among the newest
    `:history_rows` messages and turns (each read newest first along an index)."""
    messages_before = f"AND m.created_at < {before}" if before else ""
    turns_before = f"AND created_at < {before}" if before else ""
    messages_newest = "ORDER BY m.created_at DESC, m.id DESC LIMIT :history_rows" if newest else ""
    turns_newest = "ORDER BY created_at DESC LIMIT :history_rows" if newest else ""
    return f"""
        (SELECT m.id, m.role, m.content, m.tool_calls, m.tool_plans, m.created_at
         FROM messages AS m
         WHERE m.conversation_id = {conversation} {messages_before}
         {messages_newest})
        UNION ALL
        SELECT t.id, 'assistant', CAST(:note AS text), r.calls, CAST(NULL AS jsonb), r.last_at
        FROM (
            SELECT id FROM chat_turns
            WHERE conversation_id = {conversation} {turns_before}
            {turns_newest}
        ) AS t
        CROSS JOIN LATERAL (
            SELECT jsonb_agg(jsonb_build_object(
                       'id', c.call_id, 'name', c.name, 'arguments', c.arguments,
                       'result', c.result, 'kind', c.kind, 'task', c.task, 'step', c.step,
                       'plan', c.tool_plan) ORDER BY c.seq) AS calls,
                   max(c.created_at) AS last_at
            FROM chat_tool_calls AS c WHERE c.turn_id = t.id AND c.seq < {ACTION_SEQ_BASE}
        ) AS r
        WHERE r.calls IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM messages AS reply
              WHERE reply.turn_id = t.id AND reply.role = 'assistant'
          )
    """


def recorded_result(name: str, kind: str | None, task: dict[str, Any]) -> dict[str, Any]:
    """The result of a recorded task change, as the tool returned it, from the changed row (as
    `tasks.tools` builds it: keep the two alike). Used only when the turn's last statement, which
    stores the results themselves, was lost."""
    from todo_backend.tasks.tools import _summary

    public = TaskPublic.model_validate(task)
    if name == "complete_task":
        status = "completed" if public.completed else "pending"
        result = {"task_id": public.id, "status": status, "title": public.title}
        if public.completed and public.next_task_id is not None:
            result["next_task_id"] = public.next_task_id
        return result
    if name == "delete_task" or kind == "deleted":
        return {"task_id": public.id, "status": "deleted", "title": public.title}
    return _summary(public, "created" if kind == "created" else "updated")


def settled(call: dict[str, Any]) -> dict[str, Any]:
    """A stored call with its result (derived from the changed row when only that was recorded)."""
    if call.get("result") is None and call.get("task") is not None:
        return {**call, "result": recorded_result(call["name"], call.get("kind"), call["task"])}
    if call.get("result") is None:
        return {**call, "result": {"error": "no result was recorded"}}
    return call


LIST_CONVERSATIONS = text(
    """
    SELECT counts.total, page.id, page.title, page.created_at, page.updated_at
    FROM (SELECT count(*) AS total FROM conversations WHERE user_id = :user_id) counts
    LEFT JOIN LATERAL (
        SELECT id, title, created_at, updated_at FROM conversations
        WHERE user_id = :user_id
        ORDER BY updated_at DESC, id DESC
        LIMIT :limit OFFSET :offset
    ) page ON true
    ORDER BY page.updated_at DESC, page.id DESC
    """
)

LIST_MESSAGES = compact(
    f"""
    WITH owned AS (
        SELECT id FROM conversations WHERE id = :conversation_id AND user_id = :user_id
    ), items AS ({conversation_items_sql("(SELECT id FROM owned)")})
    SELECT (SELECT id FROM owned) AS owner, counts.total, page.*
    FROM (SELECT count(*) AS total FROM items) AS counts
    LEFT JOIN LATERAL (
        SELECT sized.* FROM (
            SELECT items.*, sum(length(items.content)
                                + coalesce(octet_length(items.tool_calls::text), 0))
                            OVER (ORDER BY items.created_at, items.id) AS running_size,
                   row_number() OVER (ORDER BY items.created_at, items.id) AS position
            FROM (SELECT * FROM items ORDER BY created_at, id LIMIT :limit OFFSET :offset) AS items
        ) AS sized
        WHERE sized.position = 1 OR sized.running_size <= :max_bytes
    ) AS page ON true
    ORDER BY page.created_at, page.id
    """
)

RENAME_CONVERSATION = text(
    "UPDATE conversations SET title = :title, updated_at = now() "
    "WHERE id = :conversation_id AND user_id = :user_id "
    "RETURNING id, title, created_at, updated_at"
)

DELETE_CONVERSATION = text(
    "DELETE FROM conversations WHERE id = :conversation_id AND user_id = :user_id RETURNING id"
)


def list_conversations(db: Database, user_id: str, limit: int, offset: int) -> ConversationPage:
    rows = db.fetch_all(
        LIST_CONVERSATIONS.bindparams(user_id=user_id, limit=limit, offset=offset), idempotent=True
    )
    items = [ConversationPublic.model_validate(dict(row)) for row in rows if row["id"] is not None]
    return ConversationPage(items=items, total=rows[0]["total"] if rows else 0)


def list_messages(
    db: Database, user_id: str, conversation_id: uuid.UUID, limit: int, offset: int
) -> MessagePage:
    """A page of the conversation, oldest first; every recorded tool call is shown, even one of a
    turn that stored no reply."""
    rows = db.fetch_all(
        LIST_MESSAGES.bindparams(
            conversation_id=conversation_id,
            user_id=user_id,
            limit=limit,
            offset=offset,
            note=UNFINISHED_TURN_NOTE,
            max_bytes=MESSAGE_PAGE_MAX_BYTES,
        ),
        idempotent=True,
    )
    if not rows or rows[0]["owner"] is None:
        raise ConversationNotFoundError()
    items = [
        MessagePublic(
            id=row["id"],
            role=row["role"],
            content=row["content"],
            tool_calls=[
                {key: settled(call)[key] for key in ("name", "arguments", "result")}
                for call in row["tool_calls"]
            ]
            if row["tool_calls"]
            else None,
            created_at=row["created_at"],
        )
        for row in rows
        if row["id"] is not None
    ]
    return MessagePage(items=items, total=rows[0]["total"], limit=limit, offset=offset)


def delete_conversation(db: Database, user_id: str, conversation_id: uuid.UUID) -> None:
    if (
        db.fetch_one(
            DELETE_CONVERSATION.bindparams(conversation_id=conversation_id, user_id=user_id)
        )
        is None
    ):
        raise ConversationNotFoundError()


def rename_conversation(
    db: Database, user_id: str, conversation_id: uuid.UUID, title: str
) -> ConversationPublic:
    row = db.fetch_one(
        RENAME_CONVERSATION.bindparams(
            conversation_id=conversation_id, user_id=user_id, title=title
        ),
        # Setting the same title twice is the same as once.
        idempotent=True,
    )
    if row is None:
        raise ConversationNotFoundError()
    return ConversationPublic.model_validate(dict(row))
