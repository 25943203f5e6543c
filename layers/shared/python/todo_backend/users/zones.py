"""Time zones: which names are accepted, and every local wall-clock computation (one place).

Zone data is the standard library's `zoneinfo` reading the pinned `tzdata` package only
(`PYTHONTZPATH` is empty in the functions and the tests): neither the machine's nor Lambda's
system zone files decide. A name is accepted when tzdata has it and PostgreSQL knows it too
(`tests/test_time_zones.py` checks every accepted name against `pg_timezone_names`).

Local wall-clock times become instants by RFC 5545's rules, which are `zoneinfo`'s with
`fold=0`: a time inside a spring-forward gap moves later by the gap's length (02:30 -> 03:30), an
ambiguous fall-back time is its first instance. PostgreSQL's `AT TIME ZONE` picks the second, so
wall-clock input is never resolved in SQL.

Nothing here is imported for a UTC user's zone data: `datetime.UTC` serves them.
"""

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache, lru_cache
from typing import Any, NamedTuple

DEFAULT_ZONE = "UTC"
ZONE_NAME_MAX = 64
# The shape of an IANA name; anything else is refused before any file is looked at.
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
# tzdata names that are no zone a user lives in, or that PostgreSQL does not know.
EXCLUDED = frozenset({"Factory", "localtime", "posixrules"})


class UnknownZoneError(ValueError):
    """Not an IANA time zone name this API accepts."""


@cache
def known_zones() -> frozenset[str]:
    """Every name tzdata offers (its own list of zones), minus EXCLUDED."""
    from importlib import resources

    listing = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in listing.splitlines() if line.strip()) - EXCLUDED


def check_zone_name(value: Any) -> str:
    """`value` when it names a known zone exactly; UnknownZoneError otherwise (no echo of it)."""
    if not isinstance(value, str):
        raise UnknownZoneError("must be an IANA time zone name such as Europe/Berlin")
    if (
        len(value) > ZONE_NAME_MAX
        or _ZONE_NAME.fullmatch(value) is None
        or (value != DEFAULT_ZONE and value not in known_zones())
    ):
        raise UnknownZoneError("unknown time zone: use an IANA name such as Europe/Berlin")
    return value


def is_known_zone(value: Any) -> bool:
    try:
        check_zone_name(value)
    except UnknownZoneError:
        return False
    return True


@lru_cache(maxsize=64)
def zone_info(name: str) -> tzinfo:
    """The tzinfo of an accepted name (UTC is `datetime.UTC`: no zone file for it)."""
    if name == DEFAULT_ZONE:
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def localize(local: datetime, zone: tzinfo) -> datetime:
    """The instant (UTC) of a local wall-clock time: gap -> later by the gap's length, fold -> the
    first instance (`fold=0`; for a time in a gap, zoneinfo then uses the offset before it)."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def wall_clock(instant: datetime, zone: tzinfo) -> datetime:
    """The local wall-clock time (naive) of an instant."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def day_start(day: date, zone: tzinfo) -> datetime:
    """The first instant (UTC) of a local day (after the gap when midnight falls in one)."""
    return localize(datetime.combine(day, time()), zone)


def in_zone(instant: datetime, zone: tzinfo) -> datetime:
    """An instant as the API returns it: with the user's offset at that instant (UTC: `Z`)."""
    return instant.astimezone(zone)


class LocalDay(NamedTuple):
    """The user's local "today" at `now`, and the bounds of the local days around it."""

    today: date
    start: datetime  # today's first instant
    tomorrow: datetime  # tomorrow's first instant
    day_after: datetime  # the day after tomorrow's first instant
    week_end: datetime  # the first instant after today and the six days after it
    now: datetime


def local_day(zone: tzinfo, now: datetime | None = None) -> LocalDay:
    """The one place local day bounds come from. `now` (an aware instant) is injectable; by
    default this container's clock."""
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    today = now.astimezone(zone).date()
    return LocalDay(
        today=today,
        start=day_start(today, zone),
        tomorrow=day_start(today + timedelta(days=1), zone),
        day_after=day_start(today + timedelta(days=2), zone),
        week_end=day_start(today + timedelta(days=7), zone),
        now=now,
    )
