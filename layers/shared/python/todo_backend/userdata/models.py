"""What the export route returns (documented in the OpenAPI document; the page itself is written
as JSON text by userdata/export.py, to know its size as it grows)."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from todo_backend.chat.models import ConversationPublic, MessagePublic
from todo_backend.tasks.models import TaskPublic


class ConversationExport(ConversationPublic):
    messages: list[MessagePublic]


class UserDataExport(BaseModel):
    """One page of everything the API holds for the user. A conversation whose messages do not
    fit on a page continues on the next (the same conversation, with the rest of its messages).
    `next_cursor` is null on the last page."""

    exported_at: datetime
    settings: dict[str, Any]
    tasks: list[TaskPublic]
    conversations: list[ConversationExport]
    next_cursor: str | None
