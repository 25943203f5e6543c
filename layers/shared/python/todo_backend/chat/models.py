"""What clients send to the chat routes and get back (the tables: chat/tables.py).

Plain pydantic models, as the tasks' responses: SQLModel would bring SQLAlchemy's ORM into the
chat function's cold start."""

import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, StringConstraints

from todo_backend.tasks.models import (
    StrictModel,
    UtcDateTime,
    reject_control_characters_but_line_breaks,
)

MESSAGE_MAX = 4000
CONVERSATION_TITLE_MAX = 80


class Role(StrEnum):
    user = "user"
    assistant = "assistant"


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


class ToolCallPublic(BaseModel):
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any]


class ChatResponse(BaseModel):
    conversation_id: uuid.UUID
    response: str
    tool_calls: list[ToolCallPublic]


class ConversationPublic(BaseModel):
    id: uuid.UUID
    title: str
    created_at: UtcDateTime
    updated_at: UtcDateTime


class ConversationPage(BaseModel):
    items: list[ConversationPublic]
    total: int


class MessagePublic(BaseModel):
    id: uuid.UUID
    role: Role
    content: str
    tool_calls: list[ToolCallPublic] | None
    created_at: UtcDateTime


class MessagePage(BaseModel):
    items: list[MessagePublic]
    total: int
    limit: int
    offset: int


class ChatUsagePublic(BaseModel):
    day: date
    turns: int
    turn_limit: int
    tokens: int
    token_limit: int
