"""The task schema family: the table, what clients send, and what they get back."""

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Time,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from todo_backend.tasks.recurrence import (
    RECURRENCE_FORM,
    RECURRENCE_MAX,
    RECURRENCE_PATTERN,
    normalize,
)

TITLE_MAX = 200
DESCRIPTION_MAX = 1000
TAGS_MAX = 10
TAG_MAX = 30
IDEMPOTENCY_KEY_MAX = 255
FINGERPRINT_LENGTH = 64
# Checked before any field is validated, so a huge object fails fast with one error instead of
# one per key.
FIELDS_INPUT_MAX = 32


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class TaskStatus(StrEnum):
    all = "all"
    pending = "pending"
    completed = "completed"


# The list's sort keys as SQL (the indexes and the statement spell them the same): NULL due
# dates sort last in both orders, as one value past every date.
DUE_KEY_ASC = "COALESCE(due_date, 'infinity'::timestamptz)"
DUE_KEY_DESC = "COALESCE(due_date, '-infinity'::timestamptz)"
# A priority's rank, low 1 to high 3 (one line as PostgreSQL prints it back, which alembic's
# comparison of the model and the migrations needs).
PRIORITY_RANK = "array_position(ARRAY['low'::text, 'medium'::text, 'high'::text], priority::text)"


# A list cursor is a few dozen characters; longer is not one the API returned.
LIST_CURSOR_MAX = 300


class TaskSort(StrEnum):
    created_at = "created_at"
    updated_at = "updated_at"
    due_date = "due_date"
    priority = "priority"
    title = "title"


class DueFilter(StrEnum):
    today = "today"
    tomorrow = "tomorrow"
    next_7_days = "next_7_days"
    overdue = "overdue"
    none = "none"


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


# The same rules as JSON Schema patterns, for the document (pydantic does not check a
# `json_schema_extra` pattern: the validators above do, with their own messages).
_CONTROL = "\\u0000-\\u001f\\u007f-\\u009f"
NO_CONTROL_CHARACTERS = f"^[^{_CONTROL}]*$"
# ... and not blank: what is left once leading and trailing white space is stripped.
NOT_BLANK_NO_CONTROL_CHARACTERS = f"^[^{_CONTROL}]*[^\\s{_CONTROL}][^{_CONTROL}]*$"
_NO_CONTROL = Field(json_schema_extra={"pattern": NO_CONTROL_CHARACTERS})
_NOT_BLANK = Field(json_schema_extra={"pattern": NOT_BLANK_NO_CONTROL_CHARACTERS})


def _lower_tag(tag: str) -> str:
    # Lower-casing can lengthen a string ("İ" becomes two code points): check after it.
    lowered = tag.lower()
    if len(lowered) > TAG_MAX:
        raise ValueError(f"tags are at most {TAG_MAX} characters")
    return lowered


def _cap_tags_input(value: Any) -> Any:
    # Before any item is validated, so a huge list fails fast with one error instead of one per
    # item. Duplicates count: the document's `maxItems`, which JSON Schema counts so.
    if isinstance(value, (list, tuple)) and len(value) > TAGS_MAX:
        raise ValueError(f"at most {TAGS_MAX} tags ({len(value)} sent)")
    return value


def _normalize_tags(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def parse_due_date(value: Any) -> Any:
    """ISO 8601 date-time or date, resolved later in the user's zone (users/zones.py): a
    date-time with an offset is that instant (in UTC here), one without is local wall-clock time
    (kept naive), and a bare date is a calendar date (an all-day due date)."""
    if value is None or isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        return value
    elif isinstance(value, str):
        stripped = value.strip()
        try:
            if len(stripped) <= 10 and "T" not in stripped.upper():
                return date.fromisoformat(stripped)
            parsed = datetime.fromisoformat(stripped)
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time (e.g. 2026-11-30T17:00:00Z)") from None
    else:
        raise ValueError("must be an ISO 8601 date-time string")
    if parsed is None or parsed.tzinfo is None:
        return parsed
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("date is out of range") from None


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX),
    AfterValidator(reject_control_characters),
    _NOT_BLANK,
]
Description = Annotated[
    str,
    StringConstraints(max_length=DESCRIPTION_MAX),
    BeforeValidator(reject_control_characters),
    _NO_CONTROL,
]
Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TAG_MAX),
    AfterValidator(reject_control_characters),
    AfterValidator(_lower_tag),
    _NOT_BLANK,
]
Tags = Annotated[
    list[Tag],
    BeforeValidator(_cap_tags_input),
    AfterValidator(_normalize_tags),
    Field(json_schema_extra={"maxItems": TAGS_MAX}),
]
# A date is all-day; a naive date-time is local (resolved by the service in the user's zone).
DueDate = Annotated[
    datetime | date,
    BeforeValidator(parse_due_date),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
# What the API returns: always UTC, whatever the database session's time zone.
UtcDateTime = Annotated[datetime, AfterValidator(lambda value: value.astimezone(UTC))]
SearchText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    BeforeValidator(reject_control_characters),
    _NO_CONTROL,
]
Recurrence = Annotated[
    str,
    BeforeValidator(normalize),
    BeforeValidator(reject_control_characters),
    Field(json_schema_extra={"pattern": RECURRENCE_PATTERN, "maxLength": RECURRENCE_MAX}),
]
IdempotencyKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=IDEMPOTENCY_KEY_MAX),
    BeforeValidator(reject_control_characters),
    _NO_CONTROL,
]


# --- the table ----------------------------------------------------------------------------------


def database_now_column(name: str | None = None) -> Column[Any]:
    column: Column[Any] = Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    if name is not None:
        column.name = column.key = name
    return column


# The task tables are SQLAlchemy Core tables: every statement of the service is Core, nothing
# maps rows to objects. `metadata` holds them (migrations/env.py compares it with the database,
# as it does SQLModel.metadata, which holds the chat tables: chat/tables.py).
metadata = MetaData()

tasks = Table(
    "tasks",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("title", String(TITLE_MAX), nullable=False),
    Column("description", String(DESCRIPTION_MAX)),
    Column("completed", Boolean, nullable=False, server_default=false()),
    Column("priority", String(6), nullable=False, server_default=Priority.medium.value),
    Column("tags", ARRAY(String(TAG_MAX)), nullable=False, server_default=text("'{}'")),
    Column("due_date", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    database_now_column("created_at"),
    database_now_column("updated_at"),
    Column("recurrence", String(RECURRENCE_MAX)),
    # The occurrence created when this one was completed (kept if that one is deleted).
    Column("next_task_id", BigInteger),
    Column("remind_at", DateTime(timezone=True)),
    Column("reminded_at", DateTime(timezone=True)),
    Column("idempotency_key", String(IDEMPOTENCY_KEY_MAX)),
    # SHA-256 (hex) of the create's validated body: a key reused with another body is refused.
    Column("idempotency_fingerprint", String(FINGERPRINT_LENGTH)),
    # An all-day due date: its calendar date, and in due_date the first instant of that local
    # day (for sorting and range filters on one column; recomputed when the zone changes).
    Column("all_day", Boolean, nullable=False, server_default=false()),
    Column("due_on", Date),
    # A recurring series' local wall-clock time, when its due date had to move off it (a
    # daylight-saving gap): the next occurrence is back at it. Cleared when the zone changes.
    Column("series_time", Time),
    # The `sequence` of the task's latest event: every statement that changes the task bumps it
    # (a new task's creation event is 1), so its events are numbered 1, 2, 3… without a gap.
    Column("event_sequence", BigInteger, nullable=False, server_default=text("1")),
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
    CheckConstraint(
        "recurrence IS NULL OR due_date IS NOT NULL", name="ck_tasks_recurrence_due_date"
    ),
    CheckConstraint(f"recurrence ~ '{RECURRENCE_FORM}'", name="ck_tasks_recurrence_form"),
    CheckConstraint("next_task_id <> id", name="ck_tasks_next_task_id"),
    CheckConstraint("reminded_at IS NULL OR remind_at IS NOT NULL", name="ck_tasks_reminded_at"),
    CheckConstraint(
        "all_day = (due_on IS NOT NULL) AND (NOT all_day OR due_date IS NOT NULL)",
        name="ck_tasks_all_day",
    ),
    Index("ix_tasks_user_created", "user_id", text("created_at DESC"), text("id DESC")),
    Index("ix_tasks_user_updated", "user_id", text("updated_at DESC"), text("id DESC")),
    Index("ix_tasks_user_due", "user_id", "due_date"),
    Index(
        "ix_tasks_user_completed_created",
        "user_id",
        "completed",
        text("created_at DESC"),
        text("id DESC"),
    ),
    # Each list sort in either order (a btree serves an order and its reverse; due dates, NULLs
    # last both ways, need one per order): a page is read in index order (migration 0011). Each
    # includes the column its key is computed from: PostgreSQL reads an expression index only
    # (an offset page's skipped entries) only when it holds that column too (migration 0014).
    Index(
        "ix_tasks_user_due_asc",
        "user_id",
        text(DUE_KEY_ASC),
        "id",
        postgresql_include=["due_date"],
    ),
    Index(
        "ix_tasks_user_due_desc",
        "user_id",
        text(f"{DUE_KEY_DESC} DESC"),
        text("id DESC"),
        postgresql_include=["due_date"],
    ),
    Index(
        "ix_tasks_user_completed_due_asc",
        "user_id",
        "completed",
        text(DUE_KEY_ASC),
        "id",
        postgresql_include=["due_date"],
    ),
    Index(
        "ix_tasks_user_completed_due_desc",
        "user_id",
        "completed",
        text(f"{DUE_KEY_DESC} DESC"),
        text("id DESC"),
        postgresql_include=["due_date"],
    ),
    Index(
        "ix_tasks_user_priority",
        "user_id",
        text(f"{PRIORITY_RANK} DESC"),
        text("id DESC"),
        postgresql_include=["priority"],
    ),
    Index(
        "ix_tasks_user_title",
        "user_id",
        text("lower(title)"),
        "id",
        postgresql_include=["title"],
    ),
    # Overdue, due today (pending, by due date) and completed lately: counted index only, from
    # one user's matching entries (migration 0012).
    Index(
        "ix_tasks_user_pending_due",
        "user_id",
        "due_date",
        postgresql_include=["all_day"],
        postgresql_where=text("NOT completed"),
    ),
    Index(
        "ix_tasks_user_completed_at", "user_id", "completed_at", postgresql_where=text("completed")
    ),
    # The reminders function's claim: due, undelivered, pending reminders of every user.
    Index(
        "ix_tasks_reminders_undelivered",
        "remind_at",
        postgresql_where=text("remind_at IS NOT NULL AND reminded_at IS NULL AND NOT completed"),
    ),
    # GET /api/reminders: one user's pending reminders, soonest first.
    Index(
        "ix_tasks_user_reminders",
        "user_id",
        "remind_at",
        postgresql_where=text("remind_at IS NOT NULL AND NOT completed"),
    ),
)

# One user's tasks by tag, and by a substring of the title or description (`?q=`, a LIKE that
# pg_trgm serves): GIN over the user id (btree_gin) and the searched value, so that a search reads
# the user's matches only, however many tasks other users have (issue 25).
for _name, _column, _ops in (
    ("ix_tasks_user_tags", tasks.c.tags, None),
    ("ix_tasks_user_title_trgm", func.lower(tasks.c.title).label("title"), "gin_trgm_ops"),
    (
        "ix_tasks_user_description_trgm",
        func.lower(tasks.c.description).label("description"),
        "gin_trgm_ops",
    ),
):
    Index(
        _name,
        tasks.c.user_id,
        _column,
        postgresql_using="gin",
        **({"postgresql_ops": {_column.name: _ops}} if _ops else {}),
    )


# Per-user counters of the tasks, kept exact by triggers on `tasks` in the statement that
# changes them (migration 0013): GET /api/stats and /api/tags, and an unfiltered list's total,
# read them instead of the user's tasks. A row that reaches zero is deleted (a user without
# tasks has none). Derived data: erased with the tasks, not exported.
def _counter(name: str) -> Column[Any]:
    return Column(name, BigInteger, nullable=False, server_default=text("0"))


task_counts = Table(
    "task_counts",
    metadata,
    Column("user_id", Text, nullable=False),
    _counter("total"),
    _counter("completed"),
    # Pending tasks by priority (the stats' by_priority counts pending tasks only).
    _counter("pending_low"),
    _counter("pending_medium"),
    _counter("pending_high"),
    PrimaryKeyConstraint("user_id", name="pk_task_counts"),
)

tag_counts = Table(
    "tag_counts",
    metadata,
    Column("user_id", Text, nullable=False),
    # Code point order, as GET /api/tags lists them: the primary key reads them in that order.
    Column("tag", Text(collation="C"), nullable=False),
    _counter("count"),
    PrimaryKeyConstraint("user_id", "tag", name="pk_tag_counts"),
)


# --- what clients send and receive ----------------------------------------------------------------


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _not_too_many_fields(cls, data: Any) -> Any:
        # One error for an object with thousands of keys, not one per unknown key.
        if isinstance(data, dict) and len(data) > FIELDS_INPUT_MAX:
            raise ValueError(f"too many fields ({len(data)}); see the schema for the known ones")
        return data


# A recurring task needs a due date (`_recurrence_needs_due_date`), as the document says it.
RECURRING_NEEDS_DUE_DATE = {
    "if": {"properties": {"recurrence": {"type": "string"}}, "required": ["recurrence"]},
    "then": {"properties": {"due_date": {"type": "string"}}, "required": ["due_date"]},
}

# An all-day task needs a due date (service.resolve_dates), as the document says it.
ALL_DAY_NEEDS_DUE_DATE = {
    "if": {"properties": {"all_day": {"const": True}}, "required": ["all_day"]},
    "then": RECURRING_NEEDS_DUE_DATE["then"],
}


class TaskCreate(StrictModel):
    """Body of POST (and, as a full replacement, PUT): omitted fields take their defaults."""

    model_config = ConfigDict(
        json_schema_extra={"allOf": [RECURRING_NEEDS_DUE_DATE, ALL_DAY_NEEDS_DUE_DATE]}
    )

    title: Title
    description: Description | None = None
    priority: Priority = Priority.medium
    tags: Tags = Field(default_factory=list)
    due_date: DueDate | None = None
    completed: StrictBool = False
    recurrence: Recurrence | None = None
    remind_at: DueDate | None = None
    # None: as the due date says (a bare date is all-day). True with a date-time: its local date.
    all_day: StrictBool | None = None

    @model_validator(mode="after")
    def _recurring_tasks_are_due(self) -> "TaskCreate":
        _recurrence_needs_due_date(self)
        return self


def _recurrence_needs_due_date(data: Any) -> None:
    if data.recurrence is not None and data.due_date is None:
        raise ValueError("a recurring task needs a due_date")


NON_NULLABLE_FIELDS = ("title", "priority", "tags", "completed", "all_day")


def _not_nullable_in_schema(schema: dict[str, Any]) -> None:
    """A field that may be left out but not sent as null: its schema without the null branch."""
    schema.pop("default", None)  # null, which the schema no longer allows
    branches = [branch for branch in schema.pop("anyOf", ()) if branch != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches


# Optional, not nullable: None in Python means "not sent" (the validator refuses a sent null).
_NOT_NULLABLE = Field(default=None, json_schema_extra=_not_nullable_in_schema)


class TaskUpdate(StrictModel):
    """Body of PATCH: any subset of the fields; only those sent are changed."""

    # Checked when both are sent; a recurrence sent alone needs the task's own due date.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "properties": {"recurrence": {"type": "string"}},
                        "required": ["recurrence", "due_date"],
                    },
                    "then": RECURRING_NEEDS_DUE_DATE["then"],
                },
                # all_day: true needs the due date in the same PATCH.
                ALL_DAY_NEEDS_DUE_DATE,
            ]
        }
    )

    title: Title | None = _NOT_NULLABLE
    description: Description | None = None
    priority: Priority | None = _NOT_NULLABLE
    tags: Tags | None = _NOT_NULLABLE
    due_date: DueDate | None = None
    completed: StrictBool | None = _NOT_NULLABLE
    recurrence: Recurrence | None = None
    remind_at: DueDate | None = None
    all_day: StrictBool | None = _NOT_NULLABLE

    @field_validator(*NON_NULLABLE_FIELDS, mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Here, not in a model validator, so that the error is located at the field.
        if value is None:
            raise ValueError("cannot be null (leave the field out to keep its value)")
        return value

    @model_validator(mode="after")
    def _recurring_tasks_are_due(self) -> "TaskUpdate":
        if {"recurrence", "due_date"} <= self.model_fields_set:
            _recurrence_needs_due_date(self)
        return self


class TaskCompletion(StrictModel):
    """Body of PATCH /complete: an explicit state; no body (or no field) toggles."""

    completed: StrictBool | None = None


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
    recurrence: str | None = None
    next_task_id: int | None = None
    remind_at: UtcDateTime | None = None
    reminded_at: UtcDateTime | None = None
    all_day: bool = False


class TaskPage(BaseModel):
    items: list[TaskPublic]
    total: int
    limit: int
    offset: int
    # Pass it as `cursor` for the page after this one (same filters, sort and order); null on
    # the last page.
    next_cursor: str | None = None


class TaskListQuery(BaseModel):
    """The list endpoint's query string."""

    status: TaskStatus = TaskStatus.all
    priority: Priority | None = None
    tag: Tag | None = None
    q: SearchText | None = None
    due_before: DueDate | None = None
    due_after: DueDate | None = None
    overdue: bool | None = None
    due: DueFilter | None = None
    recurring: bool | None = None
    sort: TaskSort = TaskSort.created_at
    order: SortOrder = SortOrder.desc
    limit: int = Field(default=50, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=2**63 - 1)
    cursor: str | None = Field(
        default=None,
        max_length=LIST_CURSOR_MAX,
        description="A page's `next_cursor`: the page after it (not with a non-zero offset).",
    )


# --- tags, stats, reminders ---------------------------------------------------------------------


class TagCount(BaseModel):
    name: str
    count: int


class TagList(BaseModel):
    items: list[TagCount]
    total: int


class PriorityCounts(BaseModel):
    low: int
    medium: int
    high: int


class TaskStats(BaseModel):
    total: int
    pending: int
    completed: int
    overdue: int
    due_today: int
    by_priority: PriorityCounts
    completed_last_7_days: int


class ReminderList(BaseModel):
    items: list[TaskPublic]
    total: int


# --- the task event outbox --------------------------------------------------------------------

EVENT_DETAIL_TYPES = (
    "Task Created",
    "Task Updated",
    "Task Completed",
    "Task Deleted",
    "Task Reminder Due",
)
# Events about a user rather than one of their tasks (`task_id` null; todo_backend/userdata).
USER_EVENT_DETAIL_TYPES = ("User Data Deleted",)


EVENT_PENDING = "relayed_at IS NULL AND failed_at IS NULL"

# The outbox: one row per task change, written by the statement that makes the change and
# relayed to EventBridge afterwards (`relayed_at`), at least once.
task_events = Table(
    "task_events",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, server_default=func.gen_random_uuid()),
    Column("user_id", Text, nullable=False),
    # Null for a user event (USER_EVENT_DETAIL_TYPES), which names no task.
    Column("task_id", BigInteger),
    Column("detail_type", String(32), nullable=False),
    database_now_column("occurred_at"),
    # The task as the API returns it (TaskPublic's JSON).
    Column("task", JSONB, nullable=False),
    Column("relayed_at", DateTime(timezone=True)),
    # A relay run's lease on the event: another run skips it until then.
    Column("claimed_until", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", String(200)),
    # The event's number among its task's events (tasks.event_sequence when it was written).
    Column("sequence", BigInteger),
    # After a rejected try: not tried again before then (growing delays).
    Column("next_attempt_at", DateTime(timezone=True)),
    # Parked: rejected EVENT_MAX_ATTEMPTS times, never tried again.
    Column("failed_at", DateTime(timezone=True)),
    UniqueConstraint("event_id", name="uq_task_events_event_id"),
    CheckConstraint(
        "detail_type IN ({})".format(
            ", ".join(f"'{kind}'" for kind in (*EVENT_DETAIL_TYPES, *USER_EVENT_DETAIL_TYPES))
        ),
        name="ck_task_events_detail_type",
    ),
    CheckConstraint(
        "(task_id IS NULL) = (detail_type IN ({}))".format(
            ", ".join(f"'{kind}'" for kind in USER_EVENT_DETAIL_TYPES)
        ),
        name="ck_task_events_task_id",
    ),
    CheckConstraint("jsonb_typeof(task) = 'object'", name="ck_task_events_task"),
    # What the relay reads: events not yet relayed, oldest first.
    Index("ix_task_events_unrelayed", "id", postgresql_where=text("relayed_at IS NULL")),
    # The relay's claim (pending: neither relayed nor parked, oldest first) and its head-of-line
    # test (a task's earliest pending event), and retention (by when an event was settled).
    Index("ix_task_events_pending", "id", postgresql_where=text(EVENT_PENDING)),
    # (the same rows as ix_task_events_pending, a predicate spelled so that only the head-of-line
    # subquery matches it: events/relay.py)
    Index(
        "ix_task_events_task_pending",
        "task_id",
        "id",
        postgresql_where=text("COALESCE(relayed_at, failed_at) IS NULL"),
    ),
    Index(
        "ix_task_events_settled",
        text("(COALESCE(relayed_at, failed_at))"),
        postgresql_where=text("relayed_at IS NOT NULL OR failed_at IS NOT NULL"),
    ),
)
