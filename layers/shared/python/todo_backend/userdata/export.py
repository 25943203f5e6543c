"""Everything the API holds for a user, as JSON pages of at most EXPORT_PAGE_MAX_BYTES (GDPR
art. 20): a Lambda response is capped at 6 MB, and a heavy user's tasks alone are ~30 MB of JSON.

A page is its settings, then tasks (by id), then conversations (oldest first) with their
messages (as GET .../messages shows them, oldest first). Pages follow each other through an
opaque cursor that names the last item sent (keyset, not offsets: a change between two pages
neither repeats nor skips what stays). A conversation whose messages do not fit continues on the
next page: the same conversation again, with the rest of its messages. The page is written as
JSON text while it is read, item by item, so its size is known exactly.
"""

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import bindparam, select

from todo_backend.chat.conversations import (
    UNFINISHED_TURN_NOTE,
    compact,
    conversation_items_sql,
    settled,
)
from todo_backend.chat.models import ConversationPublic, MessagePublic
from todo_backend.core.db import Database
from todo_backend.core.errors import InvalidInputError
from todo_backend.tasks.models import tasks
from todo_backend.tasks.service import PUBLIC_COLUMNS, public_task
from todo_backend.users.service import get_settings
from todo_backend.users.zones import in_zone, zone_info

EXPORT_PAGE_MAX_BYTES = 5 * 1024 * 1024
# Rows read per statement while a page fills.
TASK_BATCH = 1000
ITEM_BATCH = 1000
CONVERSATION_BATCH = 100
# Room kept for what closes the page (brackets and the longest cursor).
CLOSING_RESERVE = 512
CURSOR_MAX = 300
START = "-infinity"
NO_ID = uuid.UUID(int=0)


class InvalidCursorError(InvalidInputError):
    def __init__(self) -> None:
        super().__init__(
            "Not a cursor this API returned; start without one",
            loc=("query", "cursor"),
            error_type="invalid_cursor",
        )


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any]:
    """The position a cursor names: {"task": id} (after that task) or {"conversation": [at,
    id], "item": [at, id]} (after that item of that conversation)."""
    if cursor is None:
        return {"task": 0}
    try:
        if len(cursor) > CURSOR_MAX:
            raise ValueError
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if set(position) == {"task"} and isinstance(position["task"], int):
            if not 0 <= position["task"] < 2**63:
                raise ValueError
            return position
        if set(position) == {"conversation", "item"}:
            for at, identifier in (position["conversation"], position["item"]):
                if at not in ("infinity", START):
                    datetime.fromisoformat(at)
                uuid.UUID(identifier)
            return position
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        pass
    raise InvalidCursorError()


def read_settings(db: Database, user_id: str) -> dict[str, Any]:
    """The user's settings (`{"timezone": ...}`, UTC when none is stored), the one place the
    export takes them from."""
    return get_settings(db, user_id).model_dump()


TASKS_AFTER = (
    select(*PUBLIC_COLUMNS)
    .where(tasks.c.user_id == bindparam("user_id"), tasks.c.id > bindparam("after"))
    .order_by(tasks.c.id)
    .limit(bindparam("limit"))
)

# The next items of the user's conversations after a position (conversations oldest first, each
# one's items oldest first); a conversation without items (or none left) is one row without one.
ITEMS_AFTER = compact(
    f"""
    WITH listed AS (
        SELECT id, title, created_at, updated_at FROM conversations
        WHERE user_id = :user_id
          AND (created_at, id) >= (CAST(:conversation_at AS timestamptz),
                                   CAST(:conversation_id AS uuid))
        ORDER BY created_at, id
        LIMIT :conversations
    )
    SELECT listed.id AS conversation_id, listed.title, listed.created_at AS conversation_at,
           listed.updated_at, item.id, item.role, item.content, item.tool_calls,
           item.created_at
    FROM listed
    LEFT JOIN LATERAL (
        SELECT * FROM ({conversation_items_sql("listed.id")}) AS items
        WHERE listed.id <> CAST(:conversation_id AS uuid)
           OR (items.created_at, items.id) > (CAST(:item_at AS timestamptz),
                                               CAST(:item_id AS uuid))
        ORDER BY items.created_at, items.id
        LIMIT :items
    ) AS item ON true
    WHERE item.id IS NOT NULL OR listed.id <> CAST(:conversation_id AS uuid)
    ORDER BY listed.created_at, listed.id, item.created_at, item.id
    LIMIT :items
    """
)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _Page:
    """The page's JSON text as it is written, and its size in bytes."""

    def __init__(self, head: str) -> None:
        self.parts = [head]
        self.size = len(head.encode())

    def fits(self, text: str) -> bool:
        return self.size + len(text.encode()) + CLOSING_RESERVE <= EXPORT_PAGE_MAX_BYTES

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text.encode())


def export_page(db: Database, user_id: str, cursor: str | None) -> bytes:
    """One page of the user's data, as the JSON body of the response (`UserDataExport`)."""
    position = decode_cursor(cursor)
    settings = read_settings(db, user_id)
    zone = settings["timezone"]
    # As every date-time the API returns: at the user's offset, written as pydantic writes them.
    exported_at = TypeAdapter(datetime).dump_python(
        in_zone(datetime.now(UTC), zone_info(zone)), mode="json"
    )
    page = _Page(f'{{"exported_at":{_dumps(exported_at)},"settings":{_dumps(settings)},"tasks":[')
    stopped: dict[str, Any] | None = None
    if "task" in position:
        stopped = _add_tasks(db, user_id, position["task"], page, zone)
        position = {"conversation": [START, str(NO_ID)], "item": [START, str(NO_ID)]}
    page.add('],"conversations":[')
    if stopped is None:
        stopped = _add_conversations(db, user_id, position, page)
    next_cursor = encode_cursor(stopped) if stopped is not None else None
    page.add(f'],"next_cursor":{_dumps(next_cursor)}}}')
    return "".join(page.parts).encode()


def _add_tasks(
    db: Database, user_id: str, after: int, page: _Page, zone: str
) -> dict[str, Any] | None:
    """Tasks after id `after` while they fit; where to go on from (None: all were added)."""
    separator = ""
    while True:
        rows = db.fetch_all(
            TASKS_AFTER.params(user_id=user_id, after=after, limit=TASK_BATCH), idempotent=True
        )
        for row in rows:
            # At the user's offset, as the task routes return it.
            item = separator + public_task(row, zone).model_dump_json()
            if not page.fits(item):
                return {"task": after}
            page.add(item)
            separator, after = ",", row["id"]
        if len(rows) < TASK_BATCH:
            return None


def _add_conversations(
    db: Database, user_id: str, position: dict[str, Any], page: _Page
) -> dict[str, Any] | None:
    """Conversations and their items after `position` while they fit; where to go on from."""
    (conversation_at, conversation_id), (item_at, item_id) = (
        position["conversation"],
        position["item"],
    )
    open_id: uuid.UUID | None = None  # the conversation whose messages are being written
    while True:
        rows = db.fetch_all(
            ITEMS_AFTER.bindparams(
                user_id=user_id,
                conversation_at=conversation_at,
                conversation_id=conversation_id,
                item_at=item_at,
                item_id=item_id,
                conversations=CONVERSATION_BATCH,
                items=ITEM_BATCH,
                note=UNFINISHED_TURN_NOTE,
            ),
            idempotent=True,
        )
        if not rows:
            break
        for row in rows:
            text = ""
            if row["conversation_id"] != open_id:
                header = ConversationPublic.model_validate(
                    {
                        "id": row["conversation_id"],
                        "title": row["title"],
                        "created_at": row["conversation_at"],
                        "updated_at": row["updated_at"],
                    }
                ).model_dump_json()
                text = ("]}," if open_id is not None else "") + header[:-1] + ',"messages":['
            elif row["id"] is not None:
                text = ","
            if row["id"] is not None:
                text += _message(row).model_dump_json()
            if not page.fits(text):
                if open_id is not None:
                    page.add("]}")
                return {
                    "conversation": [conversation_at, conversation_id],
                    "item": [item_at, item_id],
                }
            page.add(text)
            open_id = row["conversation_id"]
            conversation_at = row["conversation_at"].isoformat()
            conversation_id = str(row["conversation_id"])
            if row["id"] is not None:
                item_at, item_id = row["created_at"].isoformat(), str(row["id"])
            else:
                item_at, item_id = "infinity", str(NO_ID)
    if open_id is not None:
        page.add("]}")
    return None


def _message(row: Any) -> MessagePublic:
    """An item as GET .../messages shows it (chat/conversations.py list_messages)."""
    return MessagePublic(
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
