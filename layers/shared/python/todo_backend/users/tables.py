"""The user settings table, and the parts of a statement that bring the user's zone along.

No request reads the settings with a statement of its own: each container remembers every user's
zone as the last statement saw it (`remembered_zone`), a statement that depends on the zone is
built for that zone and also returns the stored one (`stored_zone`), and the caller runs it again,
once, when they differ (the zone was changed elsewhere). A `Time-Zone` request header is stored for
a user without a zone by one statement, once per container and user (`header_zone_statement`):
after it the container knows a zone is stored and ignores the header.
"""

from collections import OrderedDict
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import insert

from todo_backend.users.zones import DEFAULT_ZONE, ZONE_NAME_MAX

metadata = MetaData()

user_settings = Table(
    "user_settings",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("timezone", String(ZONE_NAME_MAX), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Users whose zone this container has seen: (zone, whether it is stored), most recent last.
REMEMBERED_MAX = 1024
_remembered: OrderedDict[str, tuple[str, bool]] = OrderedDict()


def remember(user_id: str, zone: str | None) -> str:
    """Record the stored zone a statement returned (None: none stored, so UTC); the zone."""
    _remembered[user_id] = (zone or DEFAULT_ZONE, zone is not None)
    _remembered.move_to_end(user_id)
    while len(_remembered) > REMEMBERED_MAX:
        _remembered.popitem(last=False)
    return zone or DEFAULT_ZONE


def forget_zones() -> None:
    _remembered.clear()


def remembered_zone(user_id: str) -> tuple[str, bool]:
    """The user's zone as this container last saw it (UTC when unknown), and whether stored."""
    return _remembered.get(user_id, (DEFAULT_ZONE, False))


def stored_zone(user_id: Any) -> ColumnElement[Any]:
    """The user's stored zone (NULL when none) as a scalar expression for a statement."""
    return (
        select(user_settings.c.timezone).where(user_settings.c.user_id == user_id).scalar_subquery()
    )


def header_zone_statement(user_id: str, header: str) -> Any:
    """Store `header` as the user's zone unless one is stored; selects the stored zone."""
    # `timezone()` fails for a name PostgreSQL does not know: such a header is never stored.
    known = select(literal(user_id), literal(header)).where(
        func.timezone(header, func.now()).is_not(None)
    )
    inserted = (
        insert(user_settings)
        .from_select(["user_id", "timezone"], known)
        .on_conflict_do_nothing(index_elements=["user_id"])
        .returning(user_settings.c.timezone)
        .cte("zone_set")
    )
    return select(
        func.coalesce(select(inserted.c.timezone).scalar_subquery(), stored_zone(user_id)).label(
            "timezone"
        )
    )


def zone_matches(stored: ColumnElement[Any], zone: Any) -> ColumnElement[bool]:
    """The guard of a change built for `zone`: the stored zone (UTC when none) is still it."""
    return func.coalesce(stored, DEFAULT_ZONE) == zone
