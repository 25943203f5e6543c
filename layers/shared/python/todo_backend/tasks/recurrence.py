"""Recurrence rules: the RFC 5545 RRULE subset the API accepts, and the next occurrence.

Accepted: `FREQ=DAILY|WEEKLY|MONTHLY|YEARLY`, optional `INTERVAL` (1-366), `BYDAY` (WEEKLY only,
plain weekdays), `BYMONTHDAY` (MONTHLY only, 1..31 or -31..-1), and `COUNT` (1-1000) or `UNTIL`
(`YYYYMMDD`, the end of that UTC day, or `YYYYMMDDTHHMMSSZ`). Anything else is refused with a
message naming the part. A rule is stored normalised: upper case, parts in that order, lists
de-duplicated and sorted, `UNTIL` as a UTC date-time.

Occurrences are computed with python-dateutil's rrule in UTC, from the task's due date: a daily
task at 09:00Z stays at 09:00Z across any daylight-saving change. Parsing needs no dateutil, so
validating a request does not import it (cold start).
"""

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

RECURRENCE_MAX = 200
FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
PART_ORDER = ("FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "COUNT", "UNTIL")
INTERVAL_MAX = 366
COUNT_MAX = 1000
# The stored form, as a PostgreSQL regular expression (the table's check constraint).
RECURRENCE_FORM = (
    "^FREQ=(DAILY|WEEKLY|MONTHLY|YEARLY)(;(INTERVAL|BYDAY|BYMONTHDAY|COUNT|UNTIL)=[0-9A-Z,+-]+)*$"
)


def _listed(item: str, most: int) -> str:
    return f"{item}(?:,{item}){{0,{most - 1}}}"


_DAY = f"(?:{'|'.join(WEEKDAYS)})"
_INTERVAL = ";INTERVAL=(?:36[0-6]|3[0-5][0-9]|[12][0-9]{2}|[1-9][0-9]?)"
_END = (
    "(?:;COUNT=(?:1000|[1-9][0-9]{0,2})"
    "|;UNTIL=[1-9][0-9]{3}(?:0[1-9]|1[0-2])(?:0[1-9]|1[0-9]|2[0-8])"
    "(?:T(?:[01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]Z)?)?"
)
# The rules in their stored form, as a JSON Schema pattern for the document: every string it
# matches is accepted (lists kept short enough that no match normalises past RECURRENCE_MAX).
# The API also accepts other spellings of them: lower case, parts in any order, `RRULE:`.
RECURRENCE_PATTERN = (
    "^FREQ=(?:"
    f"(?:DAILY|YEARLY)(?:{_INTERVAL})?"
    f"|WEEKLY(?:{_INTERVAL})?(?:;BYDAY={_listed(_DAY, 7)})?"
    f"|MONTHLY(?:{_INTERVAL})?(?:;BYMONTHDAY={_listed('-?(?:3[01]|[12][0-9]|[1-9])', 31)})?"
    f"){_END}$"
)
# Beyond this gap between the rule's start and the pivot, the start is moved forward by whole
# periods first, so a task due in year 1 does not make rrule walk two thousand years of days.
SHIFT_AFTER = timedelta(days=4000)


class RecurrenceError(ValueError):
    """The text is not a rule this API accepts; the message says why."""


class Rule(NamedTuple):
    freq: str
    interval: int | None = None
    byday: tuple[str, ...] = ()
    bymonthday: tuple[int, ...] = ()
    count: int | None = None
    until: datetime | None = None

    def __str__(self) -> str:
        parts = [f"FREQ={self.freq}"]
        if self.interval is not None:
            parts.append(f"INTERVAL={self.interval}")
        if self.byday:
            parts.append(f"BYDAY={','.join(self.byday)}")
        if self.bymonthday:
            parts.append(f"BYMONTHDAY={','.join(str(day) for day in self.bymonthday)}")
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if self.until is not None:
            # The year zero-padded: strftime's %Y is not, for years before 1000 (glibc).
            parts.append(f"UNTIL={self.until.year:04d}{self.until:%m%dT%H%M%SZ}")
        return ";".join(parts)


def _integer(name: str, text: str, low: int, high: int) -> int:
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii() or len(digits) > 4:
        raise RecurrenceError(f"{name} must be a whole number")
    value = int(text)
    if not low <= value <= high:
        raise RecurrenceError(f"{name} must be between {low} and {high}")
    return value


def _until(text: str) -> datetime:
    try:
        if len(text) == 8 and text.isdigit():
            day = datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC)
            return day + timedelta(days=1, seconds=-1)  # the whole day is included
        if len(text) == 16 and text.endswith("Z"):
            return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        pass
    raise RecurrenceError("UNTIL must be YYYYMMDD or YYYYMMDDTHHMMSSZ (UTC)")


def parse(text: str) -> Rule:
    """The rule that `text` states, or RecurrenceError naming what is wrong."""
    if not isinstance(text, str):
        raise RecurrenceError("must be an RRULE string such as FREQ=WEEKLY;BYDAY=MO")
    body = text.strip().upper()
    if len(body) > RECURRENCE_MAX:
        raise RecurrenceError(f"must be at most {RECURRENCE_MAX} characters")
    body = body.removeprefix("RRULE:")
    values: dict[str, str] = {}
    for part in body.split(";"):
        name, equals, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name or not value:
            raise RecurrenceError(f"{part.strip() or 'an empty part'!r} is not NAME=VALUE")
        if name not in PART_ORDER:
            raise RecurrenceError(f"{name} is not supported (allowed: {', '.join(PART_ORDER)})")
        if name in values:
            raise RecurrenceError(f"{name} is given twice")
        values[name] = value
    freq = values.get("FREQ")
    if freq is None:
        raise RecurrenceError("FREQ is required")
    if freq not in FREQUENCIES:
        raise RecurrenceError(f"FREQ must be one of {', '.join(FREQUENCIES)}")
    rule = Rule(freq=freq)
    if "INTERVAL" in values:
        rule = rule._replace(interval=_integer("INTERVAL", values["INTERVAL"], 1, INTERVAL_MAX))
    if "BYDAY" in values:
        if freq != "WEEKLY":
            raise RecurrenceError("BYDAY is only allowed with FREQ=WEEKLY")
        days = {day.strip() for day in values["BYDAY"].split(",")}
        unknown = days - set(WEEKDAYS)
        if unknown:
            raise RecurrenceError(
                f"BYDAY takes plain weekdays ({','.join(WEEKDAYS)}), not {sorted(unknown)[0]!r}"
            )
        rule = rule._replace(byday=tuple(day for day in WEEKDAYS if day in days))
    if "BYMONTHDAY" in values:
        if freq != "MONTHLY":
            raise RecurrenceError("BYMONTHDAY is only allowed with FREQ=MONTHLY")
        month_days = {
            _integer("BYMONTHDAY", day.strip(), -31, 31) for day in values["BYMONTHDAY"].split(",")
        }
        if 0 in month_days:
            raise RecurrenceError("BYMONTHDAY must be 1..31 or -31..-1")
        rule = rule._replace(bymonthday=tuple(sorted(month_days)))
    if "COUNT" in values and "UNTIL" in values:
        raise RecurrenceError("COUNT and UNTIL cannot both be given")
    if "COUNT" in values:
        rule = rule._replace(count=_integer("COUNT", values["COUNT"], 1, COUNT_MAX))
    if "UNTIL" in values:
        rule = rule._replace(until=_until(values["UNTIL"]))
    return rule


def normalize(text: Any) -> str:
    """The rule in its stored form; RecurrenceError (a ValueError) when it is not accepted."""
    normalized = str(parse(text))
    if len(normalized) > RECURRENCE_MAX:  # a date-only UNTIL grows by eight characters
        raise RecurrenceError(f"must be at most {RECURRENCE_MAX} characters")
    return normalized


def _months_between(start: datetime, end: datetime) -> int:
    return (end.year - start.year) * 12 + end.month - start.month


def _rrule(rule: Rule, start: datetime, pivot: datetime) -> Any:
    from dateutil import rrule as rr

    interval = rule.interval or 1
    options: dict[str, Any] = {"interval": interval, "until": rule.until, "cache": False}
    if rule.byday:
        options["byweekday"] = [getattr(rr, day) for day in rule.byday]
    if rule.bymonthday:
        options["bymonthday"] = list(rule.bymonthday)
    if pivot - start > SHIFT_AFTER:
        # Move the start forward by whole periods (keeping the rule's phase), stopping short of
        # the pivot; the implied parts that the start gave (its day of month, its month) are
        # stated explicitly so the move cannot change them.
        from dateutil.relativedelta import relativedelta

        if rule.freq in ("DAILY", "WEEKLY"):
            step = timedelta(days=interval * (7 if rule.freq == "WEEKLY" else 1))
            periods = (pivot - start) // step - 1
            start += step * periods
        elif rule.freq == "MONTHLY":
            options.setdefault("bymonthday", [start.day])
            periods = _months_between(start, pivot) // interval - 1
            start += relativedelta(months=periods * interval)
        else:
            options.update(bymonth=[start.month], bymonthday=[start.day])
            periods = (pivot.year - start.year) // interval - 1
            start += relativedelta(years=periods * interval)
    frequency = {"DAILY": rr.DAILY, "WEEKLY": rr.WEEKLY, "MONTHLY": rr.MONTHLY}.get(
        rule.freq, rr.YEARLY
    )
    return rr.rrule(frequency, dtstart=start, **options)


class Occurrence(NamedTuple):
    due_date: datetime
    recurrence: str


def next_occurrence(
    recurrence: str, due_date: datetime, completed_at: datetime
) -> Occurrence | None:
    """The occurrence that follows a task due `due_date` and completed at `completed_at`: the
    rule's first date after both, with COUNT decremented; None once the rule is exhausted (COUNT
    reached or past UNTIL)."""
    rule = parse(recurrence)
    if rule.count == 1:
        return None
    start = due_date.astimezone(UTC)
    pivot = max(start, completed_at.astimezone(UTC))
    try:
        following = _rrule(rule, start, pivot).after(pivot, inc=False)
    except (ValueError, OverflowError):  # past year 9999
        return None
    if following is None:
        return None
    remaining = rule._replace(count=None if rule.count is None else rule.count - 1)
    return Occurrence(following.astimezone(UTC), str(remaining))
