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
# A title made from the first message; a title the user gives is up to the stored maximum.
CONVERSATION_TITLE_MAX = 80
CONVERSATION_TITLE_STORED_MAX = 200


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


class PendingActionPublic(BaseModel):
    """A destructive call the model asked for; it runs once the user confirms it."""

    id: uuid.UUID
    name: str
    arguments: dict[str, Any]
    summary: str


class ChatResponse(BaseModel):
    conversation_id: uuid.UUID
    # The turn, for POST .../chat/turns/{turn_id}/undo (null only in responses stored before
    # turns had one).
    turn_id: uuid.UUID | None = None
    response: str
    tool_calls: list[ToolCallPublic]
    pending_actions: list[PendingActionPublic] = []


class ActionStatus(StrEnum):
    done = "done"
    cancelled = "cancelled"


class ActionOutcome(BaseModel):
    id: uuid.UUID
    status: ActionStatus
    # The tool's result (done only; a cancel's body has none).
    result: dict[str, Any] | None = None


class UndoAction(StrEnum):
    deleted = "deleted"
    restored = "restored"
    reverted = "reverted"


class UndoneTask(BaseModel):
    task_id: int
    action: UndoAction


class UndoResponse(BaseModel):
    turn_id: uuid.UUID
    undone: list[UndoneTask]


class ConversationRename(StrictModel):
    title: Annotated[
        str,
        StringConstraints(min_length=1, max_length=CONVERSATION_TITLE_STORED_MAX),
        BeforeValidator(reject_control_characters_but_line_breaks),
        AfterValidator(_not_blank),
    ]


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
