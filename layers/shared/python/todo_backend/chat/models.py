"""Conversations with the assistant and their messages."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StringConstraints
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel

from todo_backend.tasks.models import (
    StrictModel,
    UtcDateTime,
    reject_control_characters_but_line_breaks,
    set_by_database_now,
)

MESSAGE_MAX = 4000
CONVERSATION_TITLE_MAX = 80


class Role(StrEnum):
    user = "user"
    assistant = "assistant"


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
    title: str = Field(sa_column=Column(String(CONVERSATION_TITLE_MAX), nullable=False))
    created_at: datetime | None = set_by_database_now()
    updated_at: datetime | None = set_by_database_now()


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant')", name="ck_messages_role"),
        Index("ix_messages_conversation_created", "conversation_id", "created_at", "id"),
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
    # clock_timestamp(): messages written within one transaction still order correctly.
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()
        ),
    )


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


ChatText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MESSAGE_MAX),
    BeforeValidator(reject_control_characters_but_line_breaks),
    AfterValidator(_not_blank),
]


class ChatRequest(StrictModel):
    message: ChatText
    conversation_id: uuid.UUID | None = None


class ToolCallPublic(SQLModel):
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any]


class ChatResponse(SQLModel):
    conversation_id: uuid.UUID
    response: str
    tool_calls: list[ToolCallPublic]


class ConversationPublic(SQLModel):
    id: uuid.UUID
    title: str
    created_at: UtcDateTime
    updated_at: UtcDateTime


class ConversationPage(SQLModel):
    items: list[ConversationPublic]
    total: int


class MessagePublic(SQLModel):
    id: uuid.UUID
    role: Role
    content: str
    tool_calls: list[ToolCallPublic] | None
    created_at: UtcDateTime


class MessageList(SQLModel):
    items: list[MessagePublic]
