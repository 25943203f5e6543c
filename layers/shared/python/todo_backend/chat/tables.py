"""The chat tables, as SQLModel tables: what migrations/env.py compares with the database.

The chat function's statements are SQL text (chat/conversations.py, chat/turns.py), so it never
imports this module: SQLModel brings SQLAlchemy's ORM, about 75 ms of a cold start.
"""

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel

from todo_backend.chat.models import CONVERSATION_TITLE_STORED_MAX
from todo_backend.tasks.models import IDEMPOTENCY_KEY_MAX, database_now_column


def set_by_database_now() -> Any:
    """A `timestamptz NOT NULL DEFAULT now()` column: the database's clock, not the container's."""
    return Field(default=None, sa_column=database_now_column())


class Conversation(SQLModel, table=True):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_user_updated", "user_id", text("updated_at DESC"), text("id DESC")),
    )

    id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()
        ),
    )
    user_id: str = Field(sa_column=Column(Text, nullable=False))
    title: str = Field(sa_column=Column(String(CONVERSATION_TITLE_STORED_MAX), nullable=False))
    created_at: datetime | None = set_by_database_now()
    updated_at: datetime | None = set_by_database_now()


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant')", name="ck_messages_role"),
        Index("ix_messages_conversation_created", "conversation_id", "created_at", "id"),
        # One reply per turn: a retried turn replaces its failure note.
        Index(
            "uq_messages_turn_reply",
            "turn_id",
            unique=True,
            postgresql_where=text("role = 'assistant'"),
        ),
    )

    id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()
        ),
    )
    conversation_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True),
            ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    role: str = Field(sa_column=Column(String(9), nullable=False))
    content: str = Field(sa_column=Column(Text, nullable=False))
    # What an assistant message did: [{"id", "name", "arguments", "result", "step"}], in order.
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSONB))
    # The model's plan before each step of tool calls, replayed with them.
    tool_plans: list[str] | None = Field(default=None, sa_column=Column(JSONB))
    # The turn that wrote it (null for messages stored before turns were recorded).
    turn_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    # clock_timestamp(): messages written within one transaction still order correctly.
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()
        ),
    )


class ChatTurn(SQLModel, table=True):
    """One turn (one POST .../chat): its idempotency key, state, stored response and usage."""

    __tablename__ = "chat_turns"
    __table_args__ = (
        CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name="ck_chat_turns_status"
        ),
        UniqueConstraint("user_id", "idempotency_key", name="uq_chat_turns_user_key"),
        Index("ix_chat_turns_conversation_created", "conversation_id", "created_at"),
        # Retention (CHAT_RECORD_RETENTION_DAYS): the oldest turns first.
        Index("ix_chat_turns_created", "created_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    user_id: str = Field(sa_column=Column(Text, nullable=False))
    conversation_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True),
            ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(IDEMPOTENCY_KEY_MAX)))
    # A hash of the request (message and conversation): a key reused for another request is a 422.
    fingerprint: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(9), nullable=False))
    # Chosen by the function for each attempt: a claim run again after its reply was lost knows
    # the turn as its own.
    attempt_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    attempts: int = Field(sa_column=Column(Integer, nullable=False, server_default="1"))
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    input_tokens: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    output_tokens: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    created_at: datetime | None = set_by_database_now()
    started_at: datetime | None = set_by_database_now()
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class ChatToolCall(SQLModel, table=True):
    """A tool call of a turn. A call that changed a task is written in the statement that made the
    change (`task` is the changed row, `result` null until derived); others when the turn ends."""

    __tablename__ = "chat_tool_calls"
    __table_args__ = (PrimaryKeyConstraint("turn_id", "seq", name="pk_chat_tool_calls"),)

    turn_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True), ForeignKey("chat_turns.id", ondelete="CASCADE"), nullable=False
        )
    )
    seq: int = Field(sa_column=Column(Integer, nullable=False))
    step: int = Field(sa_column=Column(Integer, nullable=False))
    call_id: str = Field(sa_column=Column(Text, nullable=False))
    name: str = Field(sa_column=Column(Text, nullable=False))
    arguments: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    tool_plan: str = Field(sa_column=Column(Text, nullable=False, server_default=""))
    kind: str | None = Field(default=None, sa_column=Column(String(9)))
    task: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    # The task as it was before the change (null for a create): what an undo puts back. Written
    # by the statement that makes the change.
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()
        ),
    )


class ChatUsage(SQLModel, table=True):
    """Turns and billed Cohere tokens per user and UTC day."""

    __tablename__ = "chat_usage"
    __table_args__ = (
        PrimaryKeyConstraint("user_id", "day", name="pk_chat_usage"),
        # Retention (CHAT_RECORD_RETENTION_DAYS): the oldest days first.
        Index("ix_chat_usage_day", "day"),
    )

    user_id: str = Field(sa_column=Column(Text, nullable=False))
    day: date = Field(sa_column=Column(Date, nullable=False))
    turns: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    tokens: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))


class ChatLease(SQLModel, table=True):
    """The user's running chat turn: at most one at a time. A lease, not a held lock (no
    transaction outlives a statement): it ends when the turn finishes, or at `until` when the
    function running it died. `version` changes with every take and release, so a claim takes
    the lease only if nothing changed since its snapshot (chat/turns.py CLAIM)."""

    __tablename__ = "chat_leases"
    __table_args__ = (PrimaryKeyConstraint("user_id", name="pk_chat_leases"),)

    user_id: str = Field(sa_column=Column(Text, nullable=False))
    attempt_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    until: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    version: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="1"))


class ChatPendingAction(SQLModel, table=True):
    """A destructive tool call the model asked for, waiting for the user's confirmation."""

    __tablename__ = "chat_pending_actions"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'done', 'cancelled')", name="ck_chat_pending_actions_status"
        ),
        UniqueConstraint("turn_id", "seq", name="uq_chat_pending_actions_turn_seq"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    user_id: str = Field(sa_column=Column(Text, nullable=False))
    turn_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True), ForeignKey("chat_turns.id", ondelete="CASCADE"), nullable=False
        )
    )
    conversation_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True),
            ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    # The tool call's number in its turn (its record in chat_tool_calls).
    seq: int = Field(sa_column=Column(Integer, nullable=False))
    call_id: str = Field(sa_column=Column(Text, nullable=False))
    name: str = Field(sa_column=Column(Text, nullable=False))
    task_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    arguments: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    summary: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(9), nullable=False, server_default="pending"))
    created_at: datetime | None = set_by_database_now()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    settled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class ChatUndo(SQLModel, table=True):
    """A turn undone: the response of its undo, returned again to a repeat."""

    __tablename__ = "chat_undos"

    turn_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True),
            ForeignKey("chat_turns.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    user_id: str = Field(sa_column=Column(Text, nullable=False))
    response: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = set_by_database_now()
