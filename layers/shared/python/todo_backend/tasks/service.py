"""The task service: every operation is one SQL statement scoped to its owner.

Ownership is part of each statement (`WHERE id = :id AND user_id = :user`), so another user's task
behaves exactly like a missing one and no read-then-write race exists.

Every change goes through `_change`: the data-modifying statement becomes a CTE (`changed`), its
task event is INSERTed into the outbox from it (always), and each `ChangeHook` adds an INSERT that
reads from it (e.g. a chat record of the tool call). They commit together or not at all, in one
statement and one round trip: no change exists without its event.

Completing a recurring task also creates its next occurrence in the same statement. The next due
date comes from python-dateutil, so it is computed between two statements: the first (the only one
for every other change) updates the task unless it is a recurring task becoming completed, and
otherwise returns the task's schedule; the second completes it only if that schedule is still the
same and no next occurrence exists yet (`next_task_id IS NULL`), setting `next_task_id` and
inserting that occurrence. Concurrent completions race on that guard: exactly one wins.
"""

import base64
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, tzinfo
from enum import Enum
from functools import cache, lru_cache
from typing import Any, Literal, NamedTuple

from sqlalchemy import (
    ARRAY,
    CTE,
    BigInteger,
    ColumnElement,
    DateTime,
    Executable,
    Integer,
    Select,
    String,
    Text,
    Update,
    and_,
    any_,
    bindparam,
    case,
    cast,
    column,
    delete,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    table,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import array, insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import TableClause

from todo_backend.core import errors
from todo_backend.core.db import Database
from todo_backend.core.errors import InvalidInputError, NotFoundError
from todo_backend.core.observability import count
from todo_backend.tasks.models import (
    DueFilter,
    PriorityCounts,
    SortOrder,
    TagCount,
    TagList,
    TaskCreate,
    TaskListQuery,
    TaskPage,
    TaskPublic,
    TaskSort,
    TaskStats,
    TaskStatus,
    TaskUpdate,
    tag_counts,
    task_counts,
    task_events,
    tasks,
)
from todo_backend.tasks.recurrence import Occurrence, next_occurrence
from todo_backend.users.tables import remember, remembered_zone, stored_zone, zone_matches
from todo_backend.users.zones import DEFAULT_ZONE, day_start, local_day, localize, zone_info

PUBLIC_COLUMNS = [tasks.c[name] for name in TaskPublic.model_fields]
# The date-times of a task, returned with the user's offset.
DATE_TIME_FIELDS = tuple(
    name for name in TaskPublic.model_fields if isinstance(tasks.c[name].type, DateTime)
)
# A completion retried this often after losing a race to a concurrent change gives up (409).
COMPLETION_ATTEMPTS = 5

# In a query's shape: a value sent as a bind parameter (its value does not shape the statement).
BOUND = "<bound>"

ChangeKind = Literal["created", "updated", "deleted", "reminded"]
# Given the `changed` CTE (every column of the changed task rows, as RETURNING gives them) and
# what kind of change it was, an INSERT ... SELECT FROM changed to commit along with the change.
ChangeHook = Callable[[CTE, ChangeKind], Executable]


class TaskNotFoundError(NotFoundError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"Task {task_id} not found")
        self.task_id = task_id


class TaskRuleError(errors.DomainError):
    """A change the task's other fields do not allow (422, in FastAPI's validation shape)."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.detail = [{"type": "value_error", "loc": ["body", field], "msg": message}]  # type: ignore[assignment]


class TaskConflictError(errors.DomainError):
    status_code = 409


# Check constraints whose violation is the client's doing, as (field, message).
RULE_CONSTRAINTS = {
    "ck_tasks_recurrence_due_date": ("due_date", "a recurring task needs a due_date"),
}


def _owned(user_id: str, task_id: int) -> ColumnElement[bool]:
    return and_(tasks.c.id == task_id, tasks.c.user_id == user_id)


def _completion_values(completed: ColumnElement[bool] | bool) -> dict[str, Any]:
    """`completed` and the `completed_at` that goes with it (kept when it stays completed)."""
    if isinstance(completed, bool):
        completed_at = func.coalesce(tasks.c.completed_at, func.now()) if completed else None
        return {"completed": completed, "completed_at": completed_at}
    return {
        "completed": completed,
        "completed_at": case((completed, func.coalesce(tasks.c.completed_at, func.now()))),
    }


def _task_or_raise(row: Any, task_id: int, user_id: str, zone_column: str) -> TaskPublic:
    if row is None or row["id"] is None:
        raise TaskNotFoundError(task_id)
    return public_task(row, remember(user_id, row[zone_column]))


# --- the user's zone: input resolved in it, output shown in it ------------------------------------


def in_user_zone(task: TaskPublic, zone: str) -> TaskPublic:
    """`task` (read in UTC) with every date-time at the user's offset: an all-day due date is
    stored as its local day's first instant, so it reads as local midnight."""
    if zone == DEFAULT_ZONE:
        return task
    info = zone_info(zone)
    return task.model_copy(
        update={
            name: value.astimezone(info)
            for name in DATE_TIME_FIELDS
            if (value := getattr(task, name)) is not None
        }
    )


def public_task(row: Any, zone: str) -> TaskPublic:
    return in_user_zone(TaskPublic.model_validate(dict(row)), zone)


def _instant(value: datetime | date, zone: tzinfo) -> datetime:
    """A date-time as the API takes it: with an offset, that instant; without, local time; a
    bare date, its local day's first instant."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else localize(value, zone)
    return day_start(value, zone)


def resolve_dates(values: dict[str, Any], zone: str, *, partial: bool) -> dict[str, Any]:
    """The body's dates (validated, not yet resolved: models.parse_due_date) as stored columns in
    the user's zone: `due_date` an instant, with `all_day` and `due_on` (the all-day date); a
    PATCH (`partial`) changes only what it sends."""
    info = zone_info(zone)
    resolved = dict(values)
    flag = resolved.pop("all_day", None)
    try:
        if resolved.get("remind_at") is not None:
            resolved["remind_at"] = _instant(resolved["remind_at"], info)
        if "due_date" in resolved:
            due = resolved["due_date"]
            if due is None:
                if flag:
                    raise TaskRuleError("all_day", "an all-day task needs a due_date")
                resolved.update(all_day=False, due_on=None)
            else:
                if isinstance(due, datetime):
                    local = due if due.tzinfo is None else due.astimezone(info)
                    day, all_day = local.date(), bool(flag)
                else:
                    day, all_day = due, flag is not False
                if all_day:
                    resolved.update(due_date=day_start(day, info), all_day=True, due_on=day)
                else:
                    resolved.update(due_date=_instant(due, info), all_day=False, due_on=None)
            resolved["series_time"] = None  # a new due date starts the series' time afresh
        elif partial and flag is not None:
            if flag:
                raise TaskRuleError("due_date", "send the due_date along with all_day: true")
            resolved.update(all_day=False, due_on=None)
        elif not partial:
            resolved.update(all_day=False, due_on=None)
    except OverflowError:
        raise TaskRuleError("due_date", "date is out of range") from None
    return resolved


# --- task events (the outbox) ---------------------------------------------------------------------


def task_json(columns: Any, zone: ColumnElement[Any]) -> ColumnElement[Any]:
    """The task in `columns` (a table's or CTE's) as a jsonb object equal to the API's JSON, for
    an owner in `zone`. `api_timestamp` (migrations 0004 and 0006) writes a timestamptz as
    pydantic does: at the owner's offset (`Z` when zero, so always for UTC users), microseconds
    only when there are any."""
    pairs: list[ColumnElement[Any]] = []
    for name in TaskPublic.model_fields:
        value = columns[name]
        if isinstance(tasks.c[name].type, DateTime):
            value = func.api_timestamp(value, zone)
        pairs += [literal_column(f"'{name}'"), value]
    return func.jsonb_build_object(*pairs)


@cache
def _rows_of(name: str, extra: tuple[str, ...] = ()) -> TableClause:
    """The rows of CTE `name` (every task column, plus `extra`) as a plain table clause, built
    once: naming a CTE object's columns would build column proxies for every statement, which
    costs more Python time than the statement takes in the database."""
    return table(
        name,
        *(column(task_column.name, task_column.type) for task_column in tasks.c),
        *(column(extra_name) for extra_name in extra),
    )


@cache
def _task_json_of(source: str) -> ColumnElement[Any]:
    """`task_json` of the rows of CTE `source`, as SQL text compiled once per container: built as
    an expression on every change it would cost more Python time than the statement's SQL.
    (Keep it short, too: pg8000 rewrites the parameter style of every statement character by
    character, in Python.)"""
    named = table(source, *(column(name) for name in TaskPublic.model_fields))
    compiled = task_json(named.c, literal_column("owner.zone")).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    # The owner's zone looked up once per row (a reminders claim spans users).
    zone = (
        f"SELECT coalesce((SELECT timezone FROM user_settings WHERE user_id = {source}.user_id),"
        f" '{DEFAULT_ZONE}') AS zone"
    )
    return literal_column(f"(SELECT {compiled} FROM ({zone}) AS owner)")


def task_json_sql(source: str) -> str:
    """`task_json` of the rows of CTE `source`, as SQL text for statements written as text."""
    return _task_json_of(source).name


def _detail_type(changed: Any, kind: ChangeKind) -> ColumnElement[str]:
    if kind == "updated":
        # completed_at is set to now() only when a task becomes completed (it is kept otherwise).
        return case(
            (
                and_(changed.c.completed, changed.c.completed_at == func.now()),
                literal_column("'Task Completed'"),
            ),
            else_=literal_column("'Task Updated'"),
        )
    name = {"created": "Task Created", "deleted": "Task Deleted", "reminded": "Task Reminder Due"}
    return literal_column(f"'{name[kind]}'")


def _event_rows(changed: Any, kind: ChangeKind) -> Select[Any]:
    """The outbox row of each changed task (not of an idempotent create's repeat)."""
    # An INSERT or UPDATE returns the task's bumped counter; a DELETE the last one it had.
    sequence = changed.c.event_sequence + 1 if kind == "deleted" else changed.c.event_sequence
    rows = select(
        changed.c.user_id,
        changed.c.id,
        _detail_type(changed, kind),
        _task_json_of(changed.name),
        sequence,
    ).select_from(changed)
    if "inserted" in changed.c:
        rows = rows.where(changed.c.inserted)
    return rows


def _events(*rows: Select[Any]) -> Executable:
    """One INSERT for all the statement's events, in the order given (the outbox's id order)."""
    source = rows[0] if len(rows) == 1 else union_all(*rows)
    columns = ["user_id", "task_id", "detail_type", "task", "sequence"]
    return task_events.insert().from_select(columns, source)


def _next_occurrence_insert(changed: Any, following: Occurrence) -> Executable:
    """The next occurrence of each changed task that has just been given a `next_task_id`:
    same title, description, priority and tags, the next due date and reminder (computed in
    the user's zone: recurrence.next_occurrence)."""

    def value(name: str) -> Any:
        return bindparam(f"next_{name}", getattr(following, name), type_=tasks.c[name].type)

    rows = select(
        changed.c.next_task_id,
        changed.c.user_id,
        changed.c.title,
        changed.c.description,
        changed.c.priority,
        changed.c.tags,
        *(value(name) for name in OCCURRENCE_COLUMNS),
    ).where(changed.c.next_task_id.is_not(None))
    if "inserted" in changed.c:
        rows = rows.where(changed.c.inserted)
    columns = [
        "id",
        "user_id",
        "title",
        "description",
        "priority",
        "tags",
        *OCCURRENCE_COLUMNS,
    ]
    return insert(tasks).from_select(columns, rows).returning(*tasks.c)


# What recurrence.next_occurrence computes of a next occurrence.
OCCURRENCE_COLUMNS = ("due_date", "recurrence", "all_day", "due_on", "series_time", "remind_at")


def _new_task_id() -> ColumnElement[int]:
    return func.nextval(func.pg_get_serial_sequence(literal_column("'tasks'"), "id"))


def change_statement(
    dml: Any,
    kind: ChangeKind,
    hooks: Sequence[ChangeHook] = (),
    *,
    extra: Sequence[ColumnElement[Any]] = (),
    following: Occurrence | None = None,
    probe: Select[Any] | None = None,
) -> Select[Any]:
    """One statement: the INSERT/UPDATE/DELETE on tasks as CTE `changed`, its outbox events, the
    next occurrence (`following`, for tasks given a `next_task_id`) with its own event, and the
    hooks. It selects the changed tasks' public columns plus `extra`; with `probe` (a one-row
    select), the probe's columns LEFT JOINed with them: one row even when nothing changed."""
    if isinstance(dml, Update):
        # Each changed task's next event number, taken under the row lock the UPDATE holds.
        dml = dml.values(event_sequence=tasks.c.event_sequence + 1)
    changed_cte = dml.returning(*tasks.c, *extra).cte("changed")
    # The statement's own parts name the CTE's columns through a light stand-in (see _rows_of).
    changed = _rows_of("changed", tuple(element.name for element in extra))
    ctes = [changed_cte]
    events = [_event_rows(changed, kind)]
    if following is not None:
        ctes.append(_next_occurrence_insert(changed, following).cte("spawned"))
        events.append(_event_rows(_rows_of("spawned"), "created"))
    ctes.append(_events(*events).cte("event"))
    ctes += [hook(changed_cte, kind).cte(f"hook_{index}") for index, hook in enumerate(hooks)]
    names = [column.name for column in PUBLIC_COLUMNS] + [element.name for element in extra]
    columns = [changed.c[name] for name in names]
    if probe is None:
        return select(*columns).select_from(changed).add_cte(*ctes)
    probed = probe.subquery("probe")
    return (
        select(*columns, *(column.label(f"probe_{column.name}") for column in probed.c))
        .select_from(probed.outerjoin(changed, true()))
        .add_cte(*ctes)
    )


def _fetch_change(db: Database, statement: Executable, *, idempotent: bool = False) -> Any:
    """Run a change statement; a violated rule between fields is a 422, not a 500."""
    with _rules_as_422():
        return db.fetch_one(statement, idempotent=idempotent)


@contextmanager
def _rules_as_422() -> Iterator[None]:
    try:
        yield
    except DBAPIError as error:  # pg8000 reports a check violation as a ProgrammingError
        fields = error.orig.args[0] if error.orig is not None and error.orig.args else None
        constraint = fields.get("n") if isinstance(fields, dict) else None
        if constraint in RULE_CONSTRAINTS:
            raise TaskRuleError(*RULE_CONSTRAINTS[constraint]) from None
        raise


def _change(
    db: Database,
    dml: Any,
    kind: ChangeKind,
    hooks: Sequence[ChangeHook] = (),
    *,
    extra: Sequence[ColumnElement[Any]] = (),
    idempotent: bool = False,
    following: Occurrence | None = None,
) -> RowMapping | None:
    """Run an INSERT/UPDATE/DELETE on tasks with its event and hooks in one statement; the changed
    task's public columns (plus `extra`), or None when no row changed."""
    statement = change_statement(dml, kind, hooks, extra=extra, following=following)
    result: RowMapping | None = _fetch_change(db, statement, idempotent=idempotent)
    return result


def _contains_text(column: Any, text: Any) -> ColumnElement[bool]:
    """Case-insensitive substring test: `lower(column) LIKE '%<text>%'` with the text's pattern
    characters escaped (it matches exactly what `strpos` would), a form the trigram indexes on
    `lower(title)` and `lower(description)` serve."""
    escaped = func.lower(text)
    for special in ("\\", "%", "_"):
        escaped = func.replace(escaped, special, "\\" + special)
    return func.lower(column).like(func.concat("%", escaped, "%"), escape="\\")


def _filters(user_id: Any, query: TaskListQuery) -> list[ColumnElement[bool]]:
    """The list's WHERE conditions. `_list_statement` calls it once per query shape, with a query
    in which every value but the enums and booleans is a bind parameter: compare columns with the
    values, never compute with them in Python here (no `f"%{query.q}%"`), or the first request's
    value would be compiled into the statement for all the others."""
    conditions: list[ColumnElement[bool]] = [tasks.c.user_id == user_id]
    if query.status is TaskStatus.pending:
        conditions.append(not_(tasks.c.completed))
    elif query.status is TaskStatus.completed:
        conditions.append(tasks.c.completed)
    if query.priority is not None:
        conditions.append(tasks.c.priority == query.priority.value)
    if query.tag is not None:
        tag = cast(query.tag, tasks.c.tags.type.item_type)
        conditions.append(tasks.c.tags.contains(array([tag])))
    if query.q is not None:
        conditions.append(
            or_(
                _contains_text(tasks.c.title, query.q), _contains_text(tasks.c.description, query.q)
            )
        )
    if query.due_before is not None:
        conditions.append(tasks.c.due_date < query.due_before)
    if query.due_after is not None:
        conditions.append(tasks.c.due_date > query.due_after)
    if query.recurring is not None:
        conditions.append(
            tasks.c.recurrence.is_not(None) if query.recurring else tasks.c.recurrence.is_(None)
        )
    if query.overdue is True:
        conditions.append(overdue())
    elif query.overdue is False:
        conditions.append(not_(func.coalesce(overdue(), false())))
    if query.due is DueFilter.none:
        conditions.append(tasks.c.due_date.is_(None))
    elif query.due is DueFilter.overdue:
        conditions.append(overdue())
    elif query.due is not None:
        start, end = DUE_RANGES[query.due]
        conditions.append(and_(tasks.c.due_date >= local(start), tasks.c.due_date < local(end)))
    return conditions


# The local day bounds (users/zones.py `LocalDay`) a statement takes as parameters.
LOCAL_BOUNDS = ("now", "start", "tomorrow", "day_after", "week_end")
# A `due` filter's range of first instants of local days: due on a day is due within it (an
# all-day task's instant is its day's first).
DUE_RANGES = {
    DueFilter.today: ("start", "tomorrow"),
    DueFilter.tomorrow: ("tomorrow", "day_after"),
    DueFilter.next_7_days: ("start", "week_end"),
}


def local(bound: str) -> Any:
    return bindparam(bound, type_=DateTime(timezone=True))


def overdue() -> ColumnElement[bool]:
    """Not completed and past due: a timed task once its instant has passed, an all-day task once
    its local day has ended (its instant is before today's first)."""
    # Spelled as a range on due_date (start <= now) that ix_tasks_user_pending_due serves.
    return and_(
        not_(tasks.c.completed),
        tasks.c.due_date < local("now"),
        or_(not_(tasks.c.all_day), tasks.c.due_date < local("start")),
    )


def _zone_dependent(query: TaskListQuery) -> bool:
    """Whether the list's rows depend on the user's zone (not only how they are shown)."""
    naive = [
        value
        for value in (query.due_before, query.due_after)
        if value is not None and not (isinstance(value, datetime) and value.tzinfo is not None)
    ]
    return query.overdue is not None or query.due is not None or bool(naive)


def _bounds(zone: str, now: datetime | None) -> dict[str, Any]:
    day = local_day(zone_info(zone), now)
    return {name: getattr(day, name) for name in LOCAL_BOUNDS}


def _sort_key(columns: Any, sort: TaskSort, order: SortOrder) -> ColumnElement[Any]:
    """The sort's key over `columns` (the table's or a subquery's), spelled as the list indexes
    (models `ix_tasks_user_*`) spell it, so that a page is read in index order."""
    if sort is TaskSort.priority:
        ranks = literal_column("ARRAY['low'::text, 'medium'::text, 'high'::text]")
        rank: ColumnElement[Any] = func.array_position(ranks, columns.priority, type_=Integer)
        return rank
    if sort is TaskSort.title:
        return func.lower(columns.title)
    if sort is TaskSort.due_date:
        # NULLs last in both orders: past every date, as one value a row comparison can take.
        edge = "'infinity'::timestamptz" if order is SortOrder.asc else "'-infinity'::timestamptz"
        return func.coalesce(columns.due_date, literal_column(edge))
    key: ColumnElement[Any] = columns[sort.value]
    return key


def _ordering(
    columns: Any, sort: TaskSort, order: SortOrder, *, reverse: bool = False
) -> list[ColumnElement[Any]]:
    """ORDER BY for `columns` (the table's or a subquery's); ties fall back to the id.
    `reverse`: the same order backwards (not the other order: NULL due dates come first)."""
    ascending = (order is SortOrder.asc) != reverse
    direction = (lambda c: c.asc()) if ascending else (lambda c: c.desc())
    return [direction(_sort_key(columns, sort, order)), direction(columns.id)]


# The type of each sort's key as a cursor carries it (JSON) and as the statement binds it.
CURSOR_KEY_TYPES: dict[TaskSort, Any] = {
    TaskSort.created_at: DateTime(timezone=True),
    TaskSort.updated_at: DateTime(timezone=True),
    TaskSort.due_date: DateTime(timezone=True),
    TaskSort.priority: Integer(),
    TaskSort.title: String(),
}


def _after_cursor(sort: TaskSort, order: SortOrder) -> ColumnElement[bool]:
    """The rows after the cursor's (key, id) in the list's order: one row comparison, which the
    sort's index serves as the start of its scan."""
    cursor_key: ColumnElement[Any] = bindparam("cursor_key", type_=CURSOR_KEY_TYPES[sort])
    if sort is TaskSort.due_date:  # a NULL due date's key is the edge of the order
        edge = "'infinity'::timestamptz" if order is SortOrder.asc else "'-infinity'::timestamptz"
        cursor_key = func.coalesce(cast(cursor_key, DateTime(timezone=True)), literal_column(edge))
    row = tuple_(_sort_key(tasks.c, sort, order), tasks.c.id)
    start = tuple_(cursor_key, bindparam("cursor_id", type_=BigInteger))
    return row > start if order is SortOrder.asc else row < start


def encode_cursor(query: TaskListQuery, key: Any, task_id: int) -> str:
    """An opaque cursor: the sort, order and the last row's key and id (base64url JSON)."""
    if isinstance(key, datetime):
        key = key.isoformat()
    payload = json.dumps([query.sort.value, query.order.value, key, task_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(query: TaskListQuery) -> tuple[Any, int]:
    """The (key, id) a cursor of this list carries; a 422 at the cursor for anything else."""
    assert query.cursor is not None
    try:
        text_ = base64.urlsafe_b64decode(query.cursor + "=" * (-len(query.cursor) % 4))
        sort, order, key, task_id = json.loads(text_)
        valid = (
            sort == query.sort.value
            and order == query.order.value
            and type(task_id) is int
            and 0 < task_id < 2**63
        )
        if valid and query.sort in (TaskSort.created_at, TaskSort.updated_at, TaskSort.due_date):
            if key is not None or query.sort is not TaskSort.due_date:
                key = datetime.fromisoformat(key)
                valid = key.tzinfo is not None
        elif valid and query.sort is TaskSort.priority:
            valid = type(key) is int and key in (1, 2, 3)
        elif valid:
            valid = isinstance(key, str)
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError):
        valid = False
    if not valid:
        raise InvalidInputError(
            "not a cursor of this list (its sort and order): pass a page's next_cursor",
            loc=("query", "cursor"),
            error_type="value_error",
        )
    return key, task_id


def _is_structural(value: Any) -> bool:
    """Enums and booleans choose the statement's structure; other values are parameters."""
    return value is None or isinstance(value, (bool, Enum))


def _shape(query: TaskListQuery) -> tuple[tuple[str, Any], ...]:
    return tuple((name, value if _is_structural(value) else BOUND) for name, value in iter(query))


class Prepared(NamedTuple):
    """A statement compiled once per shape: its SQL text (driver SQL), and for each positional
    parameter either the name of the value that supplies it (with the type's bind processor, if
    it has one) or a constant."""

    sql: str
    parameters: tuple[tuple[str | None, Any], ...]

    def bind(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            argument
            if name is None
            else (values[name] if argument is None else argument(values[name]))
            for name, argument in self.parameters
        )


def _prepare(statement: Executable, named: set[str], dialect: Any) -> Prepared:
    """Compile `statement`, whose `named` bind parameters are supplied per request and the
    others are constants (processed once, here)."""
    compiled = statement.compile(dialect=dialect)
    processors = compiled._bind_processors
    parameters: list[tuple[str | None, Any]] = []
    for name in compiled.positiontup or ():
        if name in named:
            parameters.append((name, processors.get(name)))
        else:
            value = compiled.params[name]
            parameters.append((None, processors[name](value) if name in processors else value))
    return Prepared(sql=compiled.string, parameters=tuple(parameters))


# The list's filters but `status`: without any of them, the user's counters hold the total. A
# new query field counts as a filter unless it is named here (a total counted, not read, is
# never wrong).
NOT_ROW_FILTERS = {"status", "sort", "order", "limit", "offset", "cursor"}
ROW_FILTERS = tuple(name for name in TaskListQuery.model_fields if name not in NOT_ROW_FILTERS)


def _counter_row(counters: Any, *key: ColumnElement[bool]) -> Any:
    """The counter row of `counters` with that key, or one of NULLs when there is none (no
    tasks, no task with the tag): a one-row FROM."""
    one = select(literal(1).label("one")).subquery("one")
    return one.outerjoin(counters, and_(*key))


def _user_counts(user_id: Any) -> Any:
    return _counter_row(task_counts, task_counts.c.user_id == user_id)


def _counter(value: ColumnElement[Any], name: str) -> ColumnElement[Any]:
    return func.coalesce(value, 0).label(name)


def _by_status_only(query: TaskListQuery) -> bool:
    return all(getattr(query, name) is None for name in ROW_FILTERS)


def _by_tag_only(query: TaskListQuery) -> bool:
    return (
        query.status is TaskStatus.all
        and query.tag is not None
        and all(getattr(query, name) is None for name in ROW_FILTERS if name != "tag")
    )


def _user_tag_count(user_id: Any, tag: Any) -> Any:
    return _counter_row(tag_counts, tag_counts.c.user_id == user_id, tag_counts.c.tag == tag)


def _status_total(status: TaskStatus) -> ColumnElement[Any]:
    """The number of the user's tasks of that status, from their `task_counts` row."""
    counts = task_counts.c
    if status is TaskStatus.pending:
        return _counter(counts.total - counts.completed, "total")
    return _counter(counts.completed if status is TaskStatus.completed else counts.total, "total")


@lru_cache(maxsize=256)
def _list_statement(
    shape: tuple[tuple[str, Any], ...], dialect: Any, skips: bool = False
) -> Prepared:
    """The list statement for every query of this shape, compiled once: building and compiling
    it per request cost more CPU than sending it. `skips`: the page starts past an offset."""
    template = TaskListQuery.model_construct(
        **{name: bindparam(name) if value is BOUND else value for name, value in shape}
    )
    conditions = _filters(bindparam("user_id"), template)
    zone = stored_zone(bindparam("user_id")).label("user_zone")
    by_status, by_tag = _by_status_only(template), _by_tag_only(template)
    if by_status:
        # The same exact total, read from one row however many tasks the user has.
        counts = select(_status_total(template.status), zone).select_from(
            _user_counts(bindparam("user_id"))
        )
    elif by_tag:
        # A tag's task count is its counter (a GIN index cannot count without the table).
        counts = select(_counter(tag_counts.c.count, "total"), zone).select_from(
            _user_tag_count(bindparam("user_id"), cast(template.tag, Text))
        )
    else:
        counts = select(func.count().label("total"), zone).where(*conditions)
    counts = counts.subquery("counts")
    # The cursor's next page: the rows after its (key, id); `total` still counts every match.
    after = [_after_cursor(template.sort, template.order)] if template.cursor is not None else []
    # The key a next page's cursor carries (a due date as stored: NULL, not the edge).
    key = (
        tasks.c.due_date
        if template.sort is TaskSort.due_date
        else _sort_key(tasks.c, template.sort, template.order)
    )
    shown = select(*PUBLIC_COLUMNS, key.label("sort_key"))
    limit = bindparam("limit", type_=BigInteger)
    offset = bindparam("offset", type_=BigInteger)
    ordering = _ordering(tasks.c, template.sort, template.order)
    if skips:
        # A deferred join: the skipped rows are walked as ids on the sort's index (index only,
        # where the index holds the filter's columns) and only the page's rows are read from
        # the table, rather than every skipped row. The statement's ORDER BY orders the page.
        ids = select(tasks.c.id).where(*conditions).order_by(*ordering)
        if by_status or by_tag:
            # The total is a counter read in the same snapshot, so a page past the middle is
            # walked from the other end: the same rows in reverse, skipping total - offset -
            # limit of them. Each half is gated by a one-time filter: one index walk runs.
            total = counts.c.total
            backward = _ordering(tasks.c, template.sort, template.order, reverse=True)
            nearer_start = (
                ids.where(offset <= total - offset).limit(limit).offset(offset).correlate(counts)
            )
            nearer_end = (
                select(tasks.c.id)
                .where(*conditions, offset > total - offset)
                .order_by(*backward)
                .limit(func.greatest(func.least(limit, total - offset), 0))
                .offset(func.greatest(total - offset - limit, 0))
                .correlate(counts)
            )
            halves = [part.subquery() for part in (nearer_start, nearer_end)]
            ids = union_all(*(select(half.c.id) for half in halves)).subquery("skipped")
        else:
            ids = ids.limit(limit).offset(offset).subquery("skipped")
        # The owner again: a row read by id is never another user's, whatever the ids were.
        # By `= ANY(ARRAY(...))`: the page's rows by primary key, whatever the planner guesses
        # of how many ids come (a join may walk the whole primary key instead).
        page_ids = func.array(select(ids.c.id).scalar_subquery(), type_=ARRAY(BigInteger))
        shown = shown.where(tasks.c.id == any_(page_ids), conditions[0])
    else:
        shown = shown.where(*conditions, *after).order_by(*ordering).limit(limit).offset(offset)
    page = shown.lateral("page")
    statement = (
        select(counts.c.total, counts.c.user_zone, page)
        .select_from(counts.outerjoin(page, true()))
        .order_by(*_ordering(page.c, template.sort, template.order))
    )
    named = {"user_id", "limit", "offset", "cursor_key", "cursor_id", *LOCAL_BOUNDS}
    named |= {name for name, value in shape if value is BOUND}
    return _prepare(statement, named, dialect)


def list_tasks(
    db: Database, user_id: str, query: TaskListQuery, *, now: datetime | None = None
) -> TaskPage:
    """One page of the user's tasks and the count of all matches, in one statement ("today" is
    the user's local day at `now`, by default this container's clock)."""
    cursor: tuple[Any, int | None] = (None, None)
    if query.cursor is not None:
        if query.offset:
            raise InvalidInputError(
                "cursor and a non-zero offset exclude each other: pass one",
                loc=("query", "cursor"),
                error_type="value_error",
            )
        cursor = decode_cursor(query)
    prepared = _list_statement(_shape(query), db.engine.dialect, query.offset > 0)
    zone = remembered_zone(user_id)[0]
    dependent = _zone_dependent(query)
    for _ in range(2):
        info = zone_info(zone)
        values = {**query.__dict__, "user_id": user_id}
        # One row past the page: whether there is a next page, without counting.
        values |= {"limit": query.limit + 1, "cursor_key": cursor[0], "cursor_id": cursor[1]}
        if dependent:  # only then does the statement take the local day's bounds
            values.update(_bounds(zone, now))
        for name in ("due_before", "due_after"):
            if values[name] is not None:
                try:
                    values[name] = _instant(values[name], info)
                except OverflowError:
                    raise InvalidInputError(
                        "date is out of range", loc=("query", name), error_type="value_error"
                    ) from None
        rows = db.fetch_all_sql(prepared.sql, prepared.bind(values), idempotent=True)
        found = remember(user_id, rows[0]["user_zone"])
        if found == zone or not dependent:
            break
        zone = found  # changed elsewhere: list again in the stored zone
    # One validation for the page (pydantic's loop, not Python's); then the user's offsets.
    found_rows = [row for row in rows if row["id"] is not None]
    next_cursor = None
    if len(found_rows) > query.limit:
        found_rows = found_rows[: query.limit]
        last = found_rows[-1]
        next_cursor = encode_cursor(query, last["sort_key"], last["id"])
    page = TaskPage.model_validate(
        {
            "items": found_rows,
            "total": rows[0]["total"],
            "limit": query.limit,
            "offset": query.offset,
            "next_cursor": next_cursor,
        }
    )
    if found != DEFAULT_ZONE:
        page.items = [in_user_zone(task, found) for task in page.items]
    return page


class IdempotencyKeyReusedError(InvalidInputError):
    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request body;"
            " use a new key for a new task",
            loc=("header", "idempotency-key"),
            error_type="idempotency_key_reused",
        )


def request_fingerprint(data: TaskCreate) -> str:
    """SHA-256 of the validated body in canonical JSON: bodies that mean the same task (spacing,
    key order, defaults spelled out or not) share it."""
    body = data.model_dump(mode="json")
    if body.get("all_day") is None:
        del body["all_day"]  # keys of bodies from before it existed keep their fingerprints
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _insert(values: dict[str, Any], keyed: bool, guard: ColumnElement[bool]) -> Any:
    """The INSERT of a new task, only while `guard` holds (the zone its dates were resolved in
    is still the user's); with an idempotency key, a repeat returns the first row (when its
    fingerprint matches; no row when it does not)."""
    source = select(
        *(
            (
                value
                if isinstance(value, ColumnElement)
                else literal(value, type_=tasks.c[name].type)
            ).label(name)
            for name, value in values.items()
        )
    ).where(guard)
    statement = insert(tasks).from_select(list(values), source)
    if keyed:
        statement = statement.on_conflict_do_update(
            constraint="uq_tasks_user_idempotency_key",
            set_={"idempotency_key": statement.excluded.idempotency_key},
            # Rows from before fingerprints existed have none: any body repeats them.
            where=or_(
                tasks.c.idempotency_fingerprint.is_(None),
                tasks.c.idempotency_fingerprint == statement.excluded.idempotency_fingerprint,
            ),
        )
    return statement


# What a create sends per request (TaskCreate's fields, the owner, the idempotency columns).
CREATE_VALUES = (
    *TaskCreate.model_fields,
    "due_on",
    "user_id",
    "idempotency_key",
    "idempotency_fingerprint",
)


@lru_cache(maxsize=8)
def _create_statement(keyed: bool, completed: bool, dialect: Any) -> Prepared:
    """The create statement with its event, for creates without hooks or a next occurrence,
    compiled once per shape (with an idempotency key or not, created completed or not):
    building and compiling it per request cost more CPU than sending it."""
    values: dict[str, Any] = {
        name: bindparam(name, type_=tasks.c[name].type) for name in CREATE_VALUES
    }
    values["completed_at"] = func.now() if completed else None
    statement = change_statement(
        _insert(values, keyed, _create_guard(bindparam("user_id"), bindparam("zone"))),
        "created",
        extra=[literal_column("xmax = 0").label("inserted")],
        probe=_zone_probe(bindparam("user_id")),
    )
    return _prepare(statement, {*CREATE_VALUES, "zone"}, dialect)


def _create_guard(user_id: Any, zone: Any) -> ColumnElement[bool]:
    return zone_matches(stored_zone(user_id), zone)


def _zone_probe(user_id: Any) -> Select[Any]:
    return select(stored_zone(user_id).label("zone"))


def create_task(
    db: Database,
    user_id: str,
    data: TaskCreate,
    idempotency_key: str | None = None,
    hooks: Sequence[ChangeHook] = (),
) -> tuple[TaskPublic, bool]:
    """Insert a task; with an idempotency key a repeat returns the first task (created=False),
    and a repeat with another body raises `IdempotencyKeyReusedError` (nothing is created).

    The unique (user_id, idempotency_key) constraint settles concurrent retries: ON CONFLICT DO
    UPDATE waits for the winner and returns its row when the stored fingerprint matches (no row
    when it does not), in the same single statement.
    """
    zone = remembered_zone(user_id)[0]
    for _ in range(2):
        row = _create_once(db, user_id, data, idempotency_key, hooks, zone)
        found = remember(user_id, row["probe_zone"])
        if row["id"] is not None or found == zone:
            break
        zone = found  # changed elsewhere: resolve the dates again in the stored zone
    else:
        raise TaskConflictError("The time zone kept changing; try again")
    if row["id"] is None:  # only possible with a key: it exists with another fingerprint
        raise IdempotencyKeyReusedError()
    inserted = bool(row["inserted"])
    if inserted:
        count("TasksCreated")
    return public_task(row, found), inserted


def _create_once(
    db: Database,
    user_id: str,
    data: TaskCreate,
    idempotency_key: str | None,
    hooks: Sequence[ChangeHook],
    zone: str,
) -> Any:
    """One try at the create, its dates resolved in `zone`: the row, with `probe_zone`."""
    keyed = idempotency_key is not None
    values = resolve_dates(data.model_dump(), zone, partial=False)
    following = None
    if data.completed and data.recurrence is not None and values["due_date"] is not None:
        # Created already completed: its next occurrence comes with it (the moment of
        # completion is this container's clock, the only time known before the statement).
        following = next_occurrence(
            data.recurrence,
            values["due_date"],
            datetime.now(UTC),
            zone=zone_info(zone),
            all_day=values["all_day"],
            remind_at=values["remind_at"],
        )
    values.update(
        user_id=user_id,
        idempotency_key=idempotency_key,
        idempotency_fingerprint=request_fingerprint(data) if keyed else None,
    )
    if following is None and not hooks:
        # The usual create: its statement compiled once per shape, the values sent as parameters.
        prepared = _create_statement(keyed, data.completed, db.engine.dialect)
        with _rules_as_422():
            rows = db.fetch_all_sql(
                prepared.sql, prepared.bind({**values, "zone": zone}), idempotent=keyed
            )
        return rows[0]
    if following is not None:
        values["next_task_id"] = _new_task_id()
    values["completed_at"] = func.now() if data.completed else None
    # With a key, running it twice is harmless: the constraint returns the first row.
    statement = change_statement(
        _insert(values, keyed, _create_guard(user_id, zone)),
        "created",
        hooks,
        extra=[literal_column("xmax = 0").label("inserted")],
        following=following,
        probe=_zone_probe(user_id),
    )
    return _fetch_change(db, statement, idempotent=keyed)


def get_task(db: Database, user_id: str, task_id: int) -> TaskPublic:
    statement = select(*PUBLIC_COLUMNS, stored_zone(user_id).label("user_zone")).where(
        _owned(user_id, task_id)
    )
    row = db.fetch_one(statement, idempotent=True)
    return _task_or_raise(row, task_id, user_id, "user_zone")


def _update(
    db: Database,
    user_id: str,
    task_id: int,
    values: dict[str, Any],
    hooks: Sequence[ChangeHook] = (),
    completed: bool | ColumnElement[bool] | None = None,
    *,
    partial: bool = True,
) -> TaskPublic:
    """Set `values` (as sent: dates resolved here, in the user's zone) and, unless None,
    `completed` (a bool, or an expression for a toggle). The statement is built for the zone
    this container knows; when another is stored it is built again (the probe returns it)."""
    owned = _owned(user_id, task_id)
    zone = remembered_zone(user_id)[0]
    sent = values
    if completed is None:
        needs_next: ColumnElement[bool] = false()
    else:
        becomes_completed = false() if completed is False else not_(tasks.c.completed)
        if "recurrence" in values:
            has_rule: ColumnElement[bool] = true() if values["recurrence"] is not None else false()
        else:
            has_rule = tasks.c.recurrence.is_not(None)
        needs_next = and_(becomes_completed, has_rule, tasks.c.next_task_id.is_(None))
    for _ in range(COMPLETION_ATTEMPTS):
        values = {**resolve_dates(sent, zone, partial=partial), "updated_at": func.now()}
        if "remind_at" in values:
            # A new reminder time is a new reminder: not delivered yet.
            values["reminded_at"] = case(
                (tasks.c.remind_at.is_not_distinct_from(values["remind_at"]), tasks.c.reminded_at)
            )
        if completed is not None:
            values.update(_completion_values(completed))
        # Every change but a recurring task's completion is done here, in one statement.
        zone_guard = zone_matches(stored_zone(user_id), zone)
        statement = update(tasks).where(owned, zone_guard, not_(needs_next)).values(**values)
        probe = select(
            tasks.c.due_date,
            tasks.c.recurrence,
            tasks.c.all_day,
            tasks.c.series_time,
            tasks.c.remind_at,
            func.now().label("now"),
            stored_zone(user_id).label("zone"),
        ).where(owned)
        row = _fetch_change(db, change_statement(statement, "updated", hooks, probe=probe))
        if row is None:
            raise TaskNotFoundError(task_id)
        found = remember(user_id, row["probe_zone"])
        if row["id"] is not None:
            return public_task(row, found)
        if found != zone:
            zone = found  # changed elsewhere: build it again for the stored zone
            continue
        for name in ("completed", "completed_at"):
            values.pop(name, None)
        completed_task = _complete_recurring(db, owned, values, hooks, row, zone, zone_guard)
        if completed_task is not None:
            return public_task(completed_task, found)
    raise TaskConflictError(f"Task {task_id} kept changing; try again")


def _complete_recurring(
    db: Database,
    owned: ColumnElement[bool],
    values: dict[str, Any],
    hooks: Sequence[ChangeHook],
    seen: RowMapping,
    zone: str,
    zone_guard: ColumnElement[bool],
) -> RowMapping | None:
    """Complete a recurring task as `seen` (its schedule, the database's time) and create its next
    occurrence, in one statement; None when the task changed meanwhile (the caller starts over)."""
    due_date = values.get("due_date", seen["probe_due_date"])
    recurrence = values.get("recurrence", seen["probe_recurrence"])
    if due_date is None:
        raise TaskRuleError(*RULE_CONSTRAINTS["ck_tasks_recurrence_due_date"])
    following = next_occurrence(
        recurrence,
        due_date,
        seen["probe_now"],
        zone=zone_info(zone),
        all_day=values.get("all_day", seen["probe_all_day"]),
        series_time=values.get("series_time", seen["probe_series_time"]),
        remind_at=values.get("remind_at", seen["probe_remind_at"]),
    )
    guard = [
        owned,
        zone_guard,
        not_(tasks.c.completed),
        tasks.c.next_task_id.is_(None),
        tasks.c.due_date.is_not_distinct_from(seen["probe_due_date"]),
        tasks.c.recurrence.is_not_distinct_from(seen["probe_recurrence"]),
        tasks.c.all_day == seen["probe_all_day"],
        tasks.c.series_time.is_not_distinct_from(seen["probe_series_time"]),
        tasks.c.remind_at.is_not_distinct_from(seen["probe_remind_at"]),
    ]
    finishing = {**values, "completed": True, "completed_at": func.now()}
    if following is not None:
        # Still in the future at this statement's time, as it was at the first's.
        guard.append(func.now() < following.due_date)
        finishing["next_task_id"] = _new_task_id()
    statement = update(tasks).where(*guard).values(**finishing)
    return _change(db, statement, "updated", hooks, following=following)


def replace_task(
    db: Database,
    user_id: str,
    task_id: int,
    data: TaskCreate,
    hooks: Sequence[ChangeHook] = (),
) -> TaskPublic:
    """PUT: every field takes the given value or its default."""
    values = data.model_dump()
    completed = values.pop("completed")
    return _update(db, user_id, task_id, values, hooks, completed, partial=False)


def update_task(
    db: Database,
    user_id: str,
    task_id: int,
    data: TaskUpdate,
    hooks: Sequence[ChangeHook] = (),
) -> TaskPublic:
    """PATCH: only the fields sent change."""
    values = data.model_dump(exclude_unset=True)
    if not values:
        return get_task(db, user_id, task_id)
    completed = values.pop("completed", None)
    return _update(db, user_id, task_id, values, hooks, completed)


def set_completion(
    db: Database,
    user_id: str,
    task_id: int,
    completed: bool | None = None,
    hooks: Sequence[ChangeHook] = (),
) -> TaskPublic:
    """Mark done or not done; `None` toggles."""
    target = not_(tasks.c.completed) if completed is None else completed
    return _update(db, user_id, task_id, {}, hooks, target)


def delete_task(
    db: Database, user_id: str, task_id: int, hooks: Sequence[ChangeHook] = ()
) -> TaskPublic:
    """Delete and return what was deleted."""
    statement = delete(tasks).where(_owned(user_id, task_id))
    extra = [stored_zone(user_id).label("user_zone")]
    row = _change(db, statement, "deleted", hooks, extra=extra)
    return _task_or_raise(row, task_id, user_id, "user_zone")


# --- tags and stats -------------------------------------------------------------------------------


TAGS_LISTED_MAX = 1000


def list_tags(db: Database, user_id: str) -> TagList:
    """The tags of the user's tasks with their task counts, by name (code point order): the
    first `TAGS_LISTED_MAX` (a bounded response), and `total`, the number of distinct tags. Read
    from the user's counters (`tag_counts`, in the order of its key), not from their tasks."""
    statement = (
        select(
            tag_counts.c.tag.label("name"),
            tag_counts.c.count,
            select(func.count())
            .where(tag_counts.c.user_id == user_id)
            .scalar_subquery()
            .label("total"),
        )
        .where(tag_counts.c.user_id == user_id)
        .order_by(tag_counts.c.tag)  # the column's collation is "C": code point order
        .limit(TAGS_LISTED_MAX)
    )
    rows = db.fetch_all(statement, idempotent=True)
    items = [TagCount(name=row["name"], count=row["count"]) for row in rows]
    return TagList(items=items, total=rows[0]["total"] if rows else 0)


def task_stats(db: Database, user_id: str, *, now: datetime | None = None) -> TaskStats:
    """Counts over the user's tasks, in one statement. "Today" is the user's local day at `now`
    (by default this container's clock); overdue and due today count pending tasks only, as does
    `by_priority`. The totals come from the user's counters (`task_counts`); the counts that
    depend on the time, from the partial indexes of pending tasks by due date and completed
    tasks by completion time (index only: the user's matching entries)."""
    pending = not_(tasks.c.completed)

    def counted(*conditions: ColumnElement[bool]) -> Any:
        return select(func.count()).where(tasks.c.user_id == user_id, *conditions).scalar_subquery()

    counts = task_counts.c
    statement = select(
        _counter(counts.total, "total"),
        _counter(counts.total - counts.completed, "pending"),
        _counter(counts.completed, "completed"),
        counted(overdue()).label("overdue"),
        counted(
            pending, tasks.c.due_date >= local("start"), tasks.c.due_date < local("tomorrow")
        ).label("due_today"),
        *(
            _counter(counts[f"pending_{priority}"], priority)
            for priority in ("low", "medium", "high")
        ),
        counted(
            tasks.c.completed,
            tasks.c.completed_at >= func.now() - literal_column("interval '7 days'"),
        ).label("completed_last_7_days"),
        stored_zone(user_id).label("user_zone"),
    ).select_from(_user_counts(user_id))
    zone = remembered_zone(user_id)[0]
    for _ in range(2):
        row = db.fetch_one(statement.params(_bounds(zone, now)), idempotent=True)
        assert row is not None
        found = remember(user_id, row["user_zone"])
        if found == zone:
            break
        zone = found  # changed elsewhere: count again in the stored zone
    return TaskStats(
        total=row["total"],
        pending=row["pending"],
        completed=row["completed"],
        overdue=row["overdue"],
        due_today=row["due_today"],
        by_priority=PriorityCounts(low=row["low"], medium=row["medium"], high=row["high"]),
        completed_last_7_days=row["completed_last_7_days"],
    )
