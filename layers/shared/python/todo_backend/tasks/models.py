"""The task schema family: the table, what clients send, and what they get back."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    model_validator,
)
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

TITLE_MAX = 200
DESCRIPTION_MAX = 1000
TAGS_MAX = 10
TAG_MAX = 30
IDEMPOTENCY_KEY_MAX = 255


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class TaskStatus(StrEnum):
    all = "all"
    pending = "pending"
    completed = "completed"


class TaskSort(StrEnum):
    created_at = "created_at"
    updated_at = "updated_at"
    due_date = "due_date"
    priority = "priority"
    title = "title"


class SortOrder(StrEnum):
    asc = "asc"
    desc = "desc"


# --- text rules shared by every schema -------------------------------------------------------


def _is_forbidden_control(char: str, allow_line_breaks: bool) -> bool:
    code = ord(char)
    if allow_line_breaks and char in "\t\n\r":
        return False
    return code < 0x20 or 0x7F <= code < 0xA0


def reject_control_characters(value: Any) -> Any:
    if isinstance(value, str) and any(_is_forbidden_control(c, False) for c in value):
        raise ValueError("must not contain control characters")
    return value


def reject_control_characters_but_line_breaks(value: Any) -> Any:
    if isinstance(value, str) and any(_is_forbidden_control(c, True) for c in value):
        raise ValueError("must not contain control characters (tabs and line breaks are allowed)")
    return value


def _lower_tag(tag: str) -> str:
    # Lower-casing can lengthen a string ("İ" becomes two code points): check after it.
    lowered = tag.lower()
    if len(lowered) > TAG_MAX:
        raise ValueError(f"tags are at most {TAG_MAX} characters")
    return lowered


def _normalize_tags(tags: list[str]) -> list[str]:
    unique = list(dict.fromkeys(tags))
    if len(unique) > TAGS_MAX:
        raise ValueError(f"at most {TAGS_MAX} distinct tags")
    return unique


def parse_due_date(value: Any) -> Any:
    """ISO 8601 date-time or date; without an offset it is UTC, a bare date is 00:00 UTC."""
    if value is None or isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())  # a bare date is its midnight
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time (e.g. 2026-11-30T17:00:00Z)") from None
    else:
        raise ValueError("must be an ISO 8601 date-time string")
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("date is out of range") from None


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX),
    AfterValidator(reject_control_characters),
]
Description = Annotated[
    str,
    StringConstraints(max_length=DESCRIPTION_MAX),
    BeforeValidator(reject_control_characters),
]
Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TAG_MAX),
    AfterValidator(reject_control_characters),
    AfterValidator(_lower_tag),
]
Tags = Annotated[list[Tag], AfterValidator(_normalize_tags)]
DueDate = Annotated[datetime, BeforeValidator(parse_due_date)]
# What the API returns: always UTC, whatever the database session's time zone.
UtcDateTime = Annotated[datetime, AfterValidator(lambda value: value.astimezone(UTC))]
SearchText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    BeforeValidator(reject_control_characters),
]
IdempotencyKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=IDEMPOTENCY_KEY_MAX),
    BeforeValidator(reject_control_characters),
]


# --- the table ----------------------------------------------------------------------------------


def set_by_database_now() -> Any:
    """A `timestamptz NOT NULL DEFAULT now()` column: the database's clock, not the container's."""
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_tasks_user_idempotency_key"),
        CheckConstraint(
            f"char_length(btrim(title)) BETWEEN 1 AND {TITLE_MAX}", name="ck_tasks_title_length"
        ),
        CheckConstraint(
            f"description IS NULL OR char_length(description) <= {DESCRIPTION_MAX}",
            name="ck_tasks_description_length",
        ),
        CheckConstraint("priority IN ('low', 'medium', 'high')", name="ck_tasks_priority"),
        CheckConstraint(f"cardinality(tags) <= {TAGS_MAX}", name="ck_tasks_tags_count"),
        CheckConstraint("completed = (completed_at IS NOT NULL)", name="ck_tasks_completed_at"),
        Index("ix_tasks_user_created", "user_id", text("created_at DESC"), text("id DESC")),
        Index("ix_tasks_user_updated", "user_id", text("updated_at DESC"), text("id DESC")),
        Index("ix_tasks_user_due", "user_id", "due_date"),
        Index("ix_tasks_user_completed_created", "user_id", "completed", text("created_at DESC")),
        Index("ix_tasks_tags", "tags", postgresql_using="gin"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=False), primary_key=True)
    )
    user_id: str = Field(sa_column=Column(Text, nullable=False))
    title: str = Field(sa_column=Column(String(TITLE_MAX), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(String(DESCRIPTION_MAX)))
    completed: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    priority: str = Field(
        default=Priority.medium,
        sa_column=Column(String(6), nullable=False, server_default=Priority.medium.value),
    )
    tags: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String(TAG_MAX)), nullable=False, server_default=text("'{}'")),
    )
    due_date: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    completed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime | None = set_by_database_now()
    updated_at: datetime | None = set_by_database_now()
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(IDEMPOTENCY_KEY_MAX)))


# --- what clients send and receive ----------------------------------------------------------------


class StrictModel(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


class TaskCreate(StrictModel):
    """Body of POST (and, as a full replacement, PUT): omitted fields take their defaults."""

    title: Title
    description: Description | None = None
    priority: Priority = Priority.medium
    tags: Tags = Field(default_factory=list)
    due_date: DueDate | None = None
    completed: bool = False


NON_NULLABLE_FIELDS = frozenset({"title", "priority", "tags", "completed"})


class TaskUpdate(StrictModel):
    """Body of PATCH: any subset of the fields; only those sent are changed."""

    title: Title | None = None
    description: Description | None = None
    priority: Priority | None = None
    tags: Tags | None = None
    due_date: DueDate | None = None
    completed: bool | None = None

    @model_validator(mode="after")
    def _no_null_for_required_fields(self) -> "TaskUpdate":
        nulls = sorted(
            name
            for name in self.model_fields_set & NON_NULLABLE_FIELDS
            if getattr(self, name) is None
        )
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        return self


class TaskCompletion(StrictModel):
    """Body of PATCH /complete: an explicit state; no body (or no field) toggles."""

    completed: bool | None = None


# Responses are plain pydantic models: SQLModel's validation costs ~4x as much per object.
class TaskPublic(BaseModel):
    id: int
    title: str
    description: str | None
    completed: bool
    priority: Priority
    tags: list[str]
    due_date: UtcDateTime | None
    completed_at: UtcDateTime | None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class TaskPage(BaseModel):
    items: list[TaskPublic]
    total: int
    limit: int
    offset: int


class TaskListQuery(SQLModel):
    """The list endpoint's query string."""

    status: TaskStatus = TaskStatus.all
    priority: Priority | None = None
    tag: Tag | None = None
    q: SearchText | None = None
    due_before: DueDate | None = None
    due_after: DueDate | None = None
    overdue: bool | None = None
    sort: TaskSort = TaskSort.created_at
    order: SortOrder = SortOrder.desc
    limit: int = Field(default=50, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=2**63 - 1)
