"""User settings: GET/PUT of the time zone, and the zone a request acts in."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

from sqlalchemy import (
    Date,
    DateTime,
    cast,
    distinct,
    exists,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.exc import DBAPIError

from todo_backend.core.db import Database
from todo_backend.core.errors import DomainError, InvalidInputError
from todo_backend.tasks.models import tasks
from todo_backend.users.models import UserSettings
from todo_backend.users.tables import (
    header_zone_statement,
    remember,
    remembered_zone,
    stored_zone,
    user_settings,
)
from todo_backend.users.zones import day_start, is_known_zone, zone_info

PUT_ATTEMPTS = 5
# PostgreSQL's "time zone ... not recognized" (invalid_parameter_value).
UNKNOWN_ZONE_SQLSTATE = "22023"


class SettingsConflictError(DomainError):
    status_code = 409


def request_zone(db: Database, user_id: str, header: str | None = None) -> str:
    """The zone to build the user's statements for: the one this container remembers; a valid
    `Time-Zone` header is stored first when no zone is stored (as far as this container knows:
    once per container and user, after which it is ignored). An unknown header is ignored."""
    zone, stored = remembered_zone(user_id)
    if header is not None and not stored and is_known_zone(header):
        try:
            row = db.fetch_one(header_zone_statement(user_id, header))
        except DBAPIError as error:
            if _sqlstate(error) != UNKNOWN_ZONE_SQLSTATE:
                raise
            return zone  # a zone PostgreSQL does not know: ignored, like any unknown name
        zone = remember(user_id, row["timezone"] if row is not None else None)
    return zone


def _sqlstate(error: DBAPIError) -> str | None:
    fields = error.orig.args[0] if error.orig is not None and error.orig.args else None
    return fields.get("C") if isinstance(fields, dict) else None


def get_settings(db: Database, user_id: str, header: str | None = None) -> UserSettings:
    stored = remembered_zone(user_id)[1]
    if header is not None and not stored and is_known_zone(header):
        return UserSettings(timezone=request_zone(db, user_id, header))
    row = db.fetch_one(select(stored_zone(user_id).label("timezone")), idempotent=True)
    return UserSettings(timezone=remember(user_id, row["timezone"] if row else None))


def put_settings(db: Database, user_id: str, timezone: str) -> UserSettings:
    """Store the zone, and move each all-day task's instant to its date's start in the new zone:
    all-day dates and every other instant stay, and no task event is written (nothing a user
    sees of a task changes but its offsets). The starts are zoneinfo's (PostgreSQL's zone data
    may be another release's), so the user's all-day dates are read first; the change is one
    statement, which does nothing if a date appeared meanwhile (then it starts over). A zone
    PostgreSQL does not know is refused by the first statement (`timezone()` fails on it)."""
    for _ in range(PUT_ATTEMPTS):
        with _unknown_zone_as_422():
            dates = db.fetch_one(
                select(
                    func.array_agg(distinct(tasks.c.due_on)).label("days"),
                    func.timezone(timezone, func.now()).label("known"),
                ).where(tasks.c.user_id == user_id, tasks.c.all_day),
                idempotent=True,
            )
            info = zone_info(timezone)
            days: list[date] = list(dates["days"] or []) if dates is not None else []
            starts = [day_start(day, info) for day in days]
            row = db.fetch_one(_zone_change(user_id, timezone, days, starts))
        if row is not None and row["timezone"] is not None:
            return UserSettings(timezone=remember(user_id, row["timezone"]))
    raise SettingsConflictError("Your tasks kept changing; try again")


@contextmanager
def _unknown_zone_as_422() -> Iterator[None]:
    try:
        yield
    except (DBAPIError, ZoneInfoNotFoundError) as error:
        if isinstance(error, DBAPIError) and _sqlstate(error) != UNKNOWN_ZONE_SQLSTATE:
            raise
        raise InvalidInputError(
            "unknown time zone: use an IANA name such as Europe/Berlin",
            loc=("body", "timezone"),
            error_type="value_error",
        ) from None


def _zone_change(user_id: str, timezone: str, days: list[date], starts: list[datetime]) -> Any:
    complete = ~exists().where(
        tasks.c.user_id == user_id,
        tasks.c.all_day,
        tasks.c.due_on.not_in(days) if days else true(),
    )
    # `timezone()` fails for a name PostgreSQL does not know (its zone data may be an older
    # release than tzdata's): such a zone is refused, never stored.
    source = select(literal(user_id).label("user_id"), literal(timezone).label("timezone")).where(
        func.timezone(timezone, func.now()).is_not(None)
    )
    stored = (
        insert(user_settings)
        .from_select(["user_id", "timezone"], source.where(complete))
        .on_conflict_do_update(
            index_elements=["user_id"], set_={"timezone": timezone, "updated_at": func.now()}
        )
        .returning(user_settings.c.timezone)
        .cte("stored")
    )
    moves = select(
        func.unnest(cast(days, ARRAY(Date))).label("day"),
        func.unnest(cast(starts, ARRAY(DateTime(timezone=True)))).label("start"),
    ).subquery("moves")
    moved = (
        update(tasks)
        .where(
            tasks.c.user_id == user_id,
            tasks.c.all_day,
            tasks.c.due_on == moves.c.day,
            complete,
        )
        .values(due_date=moves.c.start)
        .returning(tasks.c.id)
        .cte("moved")
    )
    # A series' kept wall-clock time was the old zone's: the new zone's is its instant's.
    unpinned = (
        update(tasks)
        .where(tasks.c.user_id == user_id, tasks.c.series_time.is_not(None), complete)
        .values(series_time=None)
        .returning(tasks.c.id)
        .cte("unpinned")
    )
    return select(
        select(stored.c.timezone).scalar_subquery().label("timezone"),
        select(func.count()).select_from(moved).scalar_subquery().label("moved"),
        select(func.count()).select_from(unpinned).scalar_subquery().label("unpinned"),
    ).add_cte(stored, moved, unpinned)
