"""The task service: every operation is one SQL statement scoped to its owner.

Ownership is part of each statement (`WHERE id = :id AND user_id = :user`), so another user's task
behaves exactly like a missing one and no read-then-write race exists.

Every change goes through `_change`: the data-modifying statement becomes a CTE (`changed`), and
each `ChangeHook` adds an INSERT that reads from it (a task event, a chat record of the tool call).
They commit together or not at all, in one statement and one round trip.
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal

from sqlalchemy import (
    CTE,
    ColumnElement,
    Executable,
    and_,
    case,
    delete,
    func,
    literal_column,
    not_,
    nulls_last,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import RowMapping

from todo_backend.core.db import Database
from todo_backend.core.errors import NotFoundError
from todo_backend.core.observability import count
from todo_backend.tasks.models import (
    SortOrder,
    Task,
    TaskCreate,
    TaskListQuery,
    TaskPage,
    TaskPublic,
    TaskSort,
    TaskStatus,
    TaskUpdate,
)

tasks = Task.__table__  # type: ignore[attr-defined]
PUBLIC_COLUMNS = [tasks.c[name] for name in TaskPublic.model_fields]

ChangeKind = Literal["created", "updated", "deleted"]
# Given the `changed` CTE (every column of the changed task rows, as RETURNING gives them) and
# what kind of change it was, an INSERT ... SELECT FROM changed to commit along with the change.
ChangeHook = Callable[[CTE, ChangeKind], Executable]


class TaskNotFoundError(NotFoundError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"Task {task_id} not found")
        self.task_id = task_id


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


def _task_or_raise(row: Any, task_id: int) -> TaskPublic:
    if row is None:
        raise TaskNotFoundError(task_id)
    return TaskPublic.model_validate(dict(row))


def _change(
    db: Database,
    dml: Any,
    kind: ChangeKind,
    hooks: Sequence[ChangeHook] = (),
    *,
    extra: Sequence[ColumnElement[Any]] = (),
    idempotent: bool = False,
) -> RowMapping | None:
    """Run an INSERT/UPDATE/DELETE on tasks with its hooks in one statement; the changed task's
    public columns (plus `extra`), or None when no row changed."""
    if not hooks:
        return db.fetch_one(dml.returning(*PUBLIC_COLUMNS, *extra), idempotent=idempotent)
    changed = dml.returning(*tasks.c, *extra).cte("changed")
    names = [column.name for column in PUBLIC_COLUMNS] + [column.name for column in extra]
    statement = select(*(changed.c[name] for name in names)).add_cte(
        *(hook(changed, kind).cte(f"hook_{index}") for index, hook in enumerate(hooks))
    )
    return db.fetch_one(statement, idempotent=idempotent)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filters(user_id: str, query: TaskListQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [tasks.c.user_id == user_id]
    if query.status is TaskStatus.pending:
        conditions.append(not_(tasks.c.completed))
    elif query.status is TaskStatus.completed:
        conditions.append(tasks.c.completed)
    if query.priority is not None:
        conditions.append(tasks.c.priority == query.priority.value)
    if query.tag is not None:
        conditions.append(tasks.c.tags.contains([query.tag]))
    if query.q is not None:
        pattern = f"%{_escape_like(query.q)}%"
        conditions.append(
            or_(
                tasks.c.title.ilike(pattern, escape="\\"),
                tasks.c.description.ilike(pattern, escape="\\"),
            )
        )
    if query.due_before is not None:
        conditions.append(tasks.c.due_date < query.due_before)
    if query.due_after is not None:
        conditions.append(tasks.c.due_date > query.due_after)
    if query.overdue is True:
        conditions.append(and_(tasks.c.due_date < func.now(), not_(tasks.c.completed)))
    elif query.overdue is False:
        conditions.append(
            or_(tasks.c.due_date.is_(None), tasks.c.due_date >= func.now(), tasks.c.completed)
        )
    return conditions


def _ordering(columns: Any, sort: TaskSort, order: SortOrder) -> list[ColumnElement[Any]]:
    """ORDER BY for `columns` (the table's or a subquery's); ties fall back to the id."""
    if sort is TaskSort.priority:
        key: ColumnElement[Any] = case({"high": 3, "medium": 2, "low": 1}, value=columns.priority)
    elif sort is TaskSort.title:
        key = func.lower(columns.title)
    else:
        key = columns[sort.value]
    direction = (lambda c: c.asc()) if order is SortOrder.asc else (lambda c: c.desc())
    primary = direction(key)
    if sort is TaskSort.due_date:
        primary = nulls_last(primary)
    return [primary, direction(columns.id)]


def list_tasks(db: Database, user_id: str, query: TaskListQuery) -> TaskPage:
    """One page of the user's tasks and the count of all matches, in one statement."""
    conditions = _filters(user_id, query)
    counts = select(func.count().label("total")).where(*conditions).subquery("counts")
    page = (
        select(*PUBLIC_COLUMNS)
        .where(*conditions)
        .order_by(*_ordering(tasks.c, query.sort, query.order))
        .limit(query.limit)
        .offset(query.offset)
        .lateral("page")
    )
    statement = (
        select(counts.c.total, page)
        .select_from(counts.outerjoin(page, true()))
        .order_by(*_ordering(page.c, query.sort, query.order))
    )
    rows = db.fetch_all(statement, idempotent=True)
    return TaskPage.model_validate(
        {
            "items": [row for row in rows if row["id"] is not None],
            "total": rows[0]["total"] if rows else 0,
            "limit": query.limit,
            "offset": query.offset,
        }
    )


def create_task(
    db: Database,
    user_id: str,
    data: TaskCreate,
    idempotency_key: str | None = None,
    hooks: Sequence[ChangeHook] = (),
) -> tuple[TaskPublic, bool]:
    """Insert a task; with an idempotency key a repeat returns the first task (created=False).

    The unique (user_id, idempotency_key) constraint settles concurrent retries: ON CONFLICT DO
    UPDATE waits for the winner and returns its row, in the same single statement.
    """
    values = data.model_dump()
    values["completed_at"] = func.now() if data.completed else None
    statement = insert(tasks).values(user_id=user_id, idempotency_key=idempotency_key, **values)
    if idempotency_key is not None:
        statement = statement.on_conflict_do_update(
            constraint="uq_tasks_user_idempotency_key",
            set_={"idempotency_key": statement.excluded.idempotency_key},
        )
    # With a key, running it twice is harmless: the constraint returns the first row.
    row = _change(
        db,
        statement,
        "created",
        hooks,
        extra=[literal_column("xmax = 0").label("inserted")],
        idempotent=idempotency_key is not None,
    )
    assert row is not None
    inserted = bool(row["inserted"])
    if inserted:
        count("TasksCreated")
    return TaskPublic.model_validate(dict(row)), inserted


def get_task(db: Database, user_id: str, task_id: int) -> TaskPublic:
    row = db.fetch_one(select(*PUBLIC_COLUMNS).where(_owned(user_id, task_id)), idempotent=True)
    return _task_or_raise(row, task_id)


def _update(
    db: Database,
    user_id: str,
    task_id: int,
    values: dict[str, Any],
    hooks: Sequence[ChangeHook] = (),
) -> TaskPublic:
    statement = (
        update(tasks).where(_owned(user_id, task_id)).values(**values, updated_at=func.now())
    )
    return _task_or_raise(_change(db, statement, "updated", hooks), task_id)


def replace_task(
    db: Database,
    user_id: str,
    task_id: int,
    data: TaskCreate,
    hooks: Sequence[ChangeHook] = (),
) -> TaskPublic:
    """PUT: every field takes the given value or its default."""
    values = data.model_dump()
    values.update(_completion_values(data.completed))
    return _update(db, user_id, task_id, values, hooks)


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
    if "completed" in values:
        values.update(_completion_values(values["completed"]))
    return _update(db, user_id, task_id, values, hooks)


def set_completion(
    db: Database,
    user_id: str,
    task_id: int,
    completed: bool | None = None,
    hooks: Sequence[ChangeHook] = (),
) -> TaskPublic:
    """Mark done or not done; `None` toggles."""
    target = not_(tasks.c.completed) if completed is None else completed
    return _update(db, user_id, task_id, _completion_values(target), hooks)


def delete_task(
    db: Database, user_id: str, task_id: int, hooks: Sequence[ChangeHook] = ()
) -> TaskPublic:
    """Delete and return what was deleted."""
    statement = delete(tasks).where(_owned(user_id, task_id))
    return _task_or_raise(_change(db, statement, "deleted", hooks), task_id)
