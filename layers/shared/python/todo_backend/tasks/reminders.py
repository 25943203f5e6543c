"""Reminders: the due ones a front end shows, and the scheduled claim that publishes each once.

A reminder is due when a task that is not completed has a `remind_at` in the past. The reminders
function claims due, undelivered reminders in one statement: a CTE picks them `FOR UPDATE SKIP
LOCKED` (an overlapping run skips what this one holds, and re-checks what it committed), the UPDATE
sets `reminded_at`, and the same statement writes each one's `Task Reminder Due` event to the
outbox. A reminder is therefore claimed exactly once, and its event is never lost.
"""

from collections.abc import Sequence

from sqlalchemy import Select, func, not_, select, true, update

from todo_backend.core.db import Database
from todo_backend.tasks.models import ReminderList, TaskPublic
from todo_backend.tasks.service import PUBLIC_COLUMNS, change_statement, in_user_zone, tasks
from todo_backend.users.tables import remember, stored_zone

# GET /api/reminders returns at most this many (soonest first); `total` counts them all.
REMINDERS_SHOWN = 100
# One claim takes at most this many reminders; a run claims until none is left (or MAX_CLAIMS).
CLAIM_BATCH = 200
MAX_CLAIMS = 20


def due_reminders(db: Database, user_id: str) -> ReminderList:
    """The user's pending tasks whose reminder time has passed, soonest first, in one statement."""
    conditions = [
        tasks.c.user_id == user_id,
        not_(tasks.c.completed),
        tasks.c.remind_at <= func.now(),
    ]
    counts = select(func.count().label("total")).where(*conditions).subquery("counts")
    order = (tasks.c.remind_at.asc(), tasks.c.id.asc())
    page = (
        select(*PUBLIC_COLUMNS)
        .where(*conditions)
        .order_by(*order)
        .limit(REMINDERS_SHOWN)
        .lateral("page")
    )
    statement = (
        select(counts.c.total, stored_zone(user_id).label("user_zone"), page)
        .select_from(counts.outerjoin(page, true()))
        .order_by(page.c.remind_at.asc(), page.c.id.asc())
    )
    rows = db.fetch_all(statement, idempotent=True)
    zone = remember(user_id, rows[0]["user_zone"])
    listed = ReminderList.model_validate(
        {"items": [row for row in rows if row["id"] is not None], "total": rows[0]["total"]}
    )
    listed.items = [in_user_zone(task, zone) for task in listed.items]
    return listed


def claim_statement(limit: int = CLAIM_BATCH) -> Select:
    """Claim up to `limit` due, undelivered reminders of every user and record their events."""
    due = (
        select(tasks.c.id)
        .where(
            tasks.c.remind_at <= func.now(),
            tasks.c.reminded_at.is_(None),
            not_(tasks.c.completed),
        )
        .order_by(tasks.c.remind_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    claim = (
        update(tasks)
        .where(tasks.c.id.in_(select(due.c.id)), tasks.c.reminded_at.is_(None))
        .values(reminded_at=func.now())
    )
    return change_statement(claim, "reminded")


def claim_due_reminders(db: Database, limit: int = CLAIM_BATCH) -> Sequence[TaskPublic]:
    """One claim: the tasks whose reminders this call delivered (to the outbox)."""
    rows = db.fetch_all(claim_statement(limit))
    return [TaskPublic.model_validate(dict(row)) for row in rows]


def claim_all_due_reminders(
    db: Database, batch: int = CLAIM_BATCH, max_claims: int = MAX_CLAIMS
) -> int:
    """Claim due reminders batch after batch until none is left; how many were claimed."""
    claimed = 0
    for _ in range(max_claims):
        found = len(claim_due_reminders(db, batch))
        claimed += found
        if found < batch:
            break
    return claimed
