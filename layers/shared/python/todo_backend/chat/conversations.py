"""Conversation storage: each operation is one statement, scoped to the conversation's owner."""

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import RowMapping

from todo_backend.chat.models import (
    CONVERSATION_TITLE_MAX,
    ConversationPage,
    ConversationPublic,
    MessageList,
    MessagePublic,
)
from todo_backend.core.db import Database
from todo_backend.core.errors import NotFoundError

HISTORY_MESSAGES = 30


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


START_CONVERSATION = text(
    """
    WITH conversation AS (
        INSERT INTO conversations (user_id, title) VALUES (:user_id, :title) RETURNING id
    )
    INSERT INTO messages (conversation_id, role, content)
    SELECT id, 'user', :content FROM conversation
    RETURNING conversation_id
    """
)

# Stores the user's message and returns the history before it (newest first), in one round trip.
# No row at all means the conversation does not exist for this user.
CONTINUE_CONVERSATION = text(
    """
    WITH conversation AS (
        UPDATE conversations SET updated_at = now()
        WHERE id = :conversation_id AND user_id = :user_id
        RETURNING id
    ), stored AS (
        INSERT INTO messages (conversation_id, role, content)
        SELECT id, 'user', :content FROM conversation
        RETURNING conversation_id
    )
    SELECT stored.conversation_id, history.role, history.content, history.tool_calls,
           history.tool_plans
    FROM stored
    LEFT JOIN LATERAL (
        SELECT role, content, tool_calls, tool_plans, created_at, id
        FROM messages
        WHERE conversation_id = stored.conversation_id
        ORDER BY created_at DESC, id DESC
        LIMIT :limit
    ) history ON true
    ORDER BY history.created_at DESC, history.id DESC
    """
)

FINISH_TURN = text(
    """
    WITH conversation AS (
        UPDATE conversations SET updated_at = now() WHERE id = :conversation_id RETURNING id
    )
    INSERT INTO messages (conversation_id, role, content, tool_calls, tool_plans)
    SELECT id, 'assistant', :content, CAST(:tool_calls AS jsonb), CAST(:tool_plans AS jsonb)
    FROM conversation
    RETURNING id
    """
)

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

LIST_MESSAGES = text(
    """
    SELECT messages.id, messages.role, messages.content, messages.tool_calls, messages.created_at
    FROM conversations
    LEFT JOIN messages ON messages.conversation_id = conversations.id
    WHERE conversations.id = :conversation_id AND conversations.user_id = :user_id
    ORDER BY messages.created_at, messages.id
    """
)

DELETE_CONVERSATION = text(
    "DELETE FROM conversations WHERE id = :conversation_id AND user_id = :user_id RETURNING id"
)


def start_turn(
    db: Database, user_id: str, conversation_id: uuid.UUID | None, message: str
) -> tuple[uuid.UUID, list[RowMapping]]:
    """Store the user's message; return the conversation and its earlier messages, oldest first."""
    if conversation_id is None:
        row = db.fetch_one(
            START_CONVERSATION.bindparams(
                user_id=user_id, title=title_from(message), content=message
            )
        )
        assert row is not None
        return row["conversation_id"], []
    rows = db.fetch_all(
        CONTINUE_CONVERSATION.bindparams(
            conversation_id=conversation_id,
            user_id=user_id,
            content=message,
            limit=HISTORY_MESSAGES,
        )
    )
    if not rows:
        raise ConversationNotFoundError()
    history = [row for row in reversed(rows) if row["role"] is not None]
    return rows[0]["conversation_id"], history


def finish_turn(
    db: Database,
    conversation_id: uuid.UUID,
    content: str,
    tool_calls: Sequence[dict[str, Any]],
    tool_plans: Sequence[str],
) -> None:
    """Store the assistant's message with the tool calls it made."""
    db.fetch_one(
        FINISH_TURN.bindparams(
            conversation_id=conversation_id,
            content=storable(content),
            tool_calls=json.dumps(storable(list(tool_calls))) if tool_calls else None,
            tool_plans=json.dumps(storable(list(tool_plans))) if tool_plans else None,
        )
    )


def list_conversations(db: Database, user_id: str, limit: int, offset: int) -> ConversationPage:
    rows = db.fetch_all(
        LIST_CONVERSATIONS.bindparams(user_id=user_id, limit=limit, offset=offset), idempotent=True
    )
    items = [ConversationPublic.model_validate(dict(row)) for row in rows if row["id"] is not None]
    return ConversationPage(items=items, total=rows[0]["total"] if rows else 0)


def list_messages(db: Database, user_id: str, conversation_id: uuid.UUID) -> MessageList:
    rows = db.fetch_all(
        LIST_MESSAGES.bindparams(conversation_id=conversation_id, user_id=user_id),
        idempotent=True,
    )
    if not rows:
        raise ConversationNotFoundError()
    items = [
        MessagePublic(
            id=row["id"],
            role=row["role"],
            content=row["content"],
            tool_calls=[
                {key: call[key] for key in ("name", "arguments", "result")}
                for call in row["tool_calls"]
            ]
            if row["tool_calls"]
            else None,
            created_at=row["created_at"],
        )
        for row in rows
        if row["id"] is not None
    ]
    return MessageList(items=items)


def delete_conversation(db: Database, user_id: str, conversation_id: uuid.UUID) -> None:
    if (
        db.fetch_one(
            DELETE_CONVERSATION.bindparams(conversation_id=conversation_id, user_id=user_id)
        )
        is None
    ):
        raise ConversationNotFoundError()
