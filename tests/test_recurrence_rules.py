"""The RRULE subset: what is accepted (and how it is normalised), what is refused, and the next
occurrence (python-dateutil, in UTC). No database: the rules are pure functions."""

from datetime import UTC, datetime, timedelta

import pytest

from todo_backend.tasks.recurrence import (
    SHIFT_AFTER,
    RecurrenceError,
    next_occurrence,
    normalize,
    parse,
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- accepted, normalised ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("FREQ=DAILY", "FREQ=DAILY"),
        ("freq=weekly", "FREQ=WEEKLY"),
        ("FREQ=MONTHLY", "FREQ=MONTHLY"),
        ("FREQ=YEARLY", "FREQ=YEARLY"),
        ("RRULE:FREQ=DAILY;INTERVAL=3", "FREQ=DAILY;INTERVAL=3"),
        ("FREQ=DAILY;INTERVAL=1", "FREQ=DAILY;INTERVAL=1"),
        ("FREQ=DAILY;INTERVAL=366", "FREQ=DAILY;INTERVAL=366"),
        ("INTERVAL=2;FREQ=WEEKLY", "FREQ=WEEKLY;INTERVAL=2"),
        ("FREQ=WEEKLY;BYDAY=FR,MO,WE,MO", "FREQ=WEEKLY;BYDAY=MO,WE,FR"),
        ("FREQ=WEEKLY;BYDAY=SU", "FREQ=WEEKLY;BYDAY=SU"),
        ("FREQ=MONTHLY;BYMONTHDAY=15,1,-1", "FREQ=MONTHLY;BYMONTHDAY=-1,1,15"),
        ("FREQ=MONTHLY;BYMONTHDAY=31", "FREQ=MONTHLY;BYMONTHDAY=31"),
        ("FREQ=DAILY;COUNT=1", "FREQ=DAILY;COUNT=1"),
        ("FREQ=DAILY;COUNT=1000", "FREQ=DAILY;COUNT=1000"),
        ("FREQ=DAILY;UNTIL=20261231T170000Z", "FREQ=DAILY;UNTIL=20261231T170000Z"),
        ("FREQ=DAILY;UNTIL=20261231", "FREQ=DAILY;UNTIL=20261231"),
        (
            " count=5 ; byday=tu ; freq=weekly ; interval=02 ",
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;COUNT=5",
        ),
    ],
)
def test_accepted_rules_are_stored_normalised(given, stored):
    assert normalize(given) == stored
    assert normalize(stored) == stored  # normalising is idempotent


# --- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("", "is not NAME=VALUE"),
        ("INTERVAL=2", "FREQ is required"),
        ("FREQ=HOURLY", "FREQ must be one of"),
        ("FREQ=MINUTELY", "FREQ must be one of"),
        ("FREQ=SECONDLY", "FREQ must be one of"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL must be between 1 and 366"),
        ("FREQ=DAILY;INTERVAL=367", "INTERVAL must be between 1 and 366"),
        ("FREQ=DAILY;INTERVAL=two", "INTERVAL must be a whole number"),
        ("FREQ=DAILY;BYDAY=MO", "BYDAY is only allowed with FREQ=WEEKLY"),
        ("FREQ=MONTHLY;BYDAY=MO", "BYDAY is only allowed with FREQ=WEEKLY"),
        ("FREQ=WEEKLY;BYDAY=1MO", "BYDAY takes plain weekdays"),
        ("FREQ=WEEKLY;BYDAY=XX", "BYDAY takes plain weekdays"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "BYMONTHDAY is only allowed with FREQ=MONTHLY"),
        ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY must be 1..31 or -31..-1"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY must be between -31 and 31"),
        ("FREQ=DAILY;COUNT=0", "COUNT must be between 1 and 1000"),
        ("FREQ=DAILY;COUNT=1001", "COUNT must be between 1 and 1000"),
        ("FREQ=DAILY;COUNT=2;UNTIL=20261231", "COUNT and UNTIL cannot both be given"),
        ("FREQ=DAILY;UNTIL=20261231T170000", "UNTIL must be YYYYMMDD or YYYYMMDDTHHMMSSZ"),
        ("FREQ=DAILY;UNTIL=20261332", "UNTIL must be YYYYMMDD or YYYYMMDDTHHMMSSZ"),
        ("FREQ=DAILY;FREQ=WEEKLY", "FREQ is given twice"),
        ("FREQ=DAILY;;COUNT=2", "is not NAME=VALUE"),
        ("FREQ=DAILY;COUNT", "is not NAME=VALUE"),
        ("FREQ=DAILY;WKST=MO", "WKST is not supported"),
        ("FREQ=MONTHLY;BYSETPOS=-1", "BYSETPOS is not supported"),
        ("FREQ=YEARLY;BYMONTH=2", "BYMONTH is not supported"),
        ("FREQ=DAILY;BYHOUR=9", "BYHOUR is not supported"),
        ("FREQ=YEARLY;BYYEARDAY=1", "BYYEARDAY is not supported"),
        ("FREQ=YEARLY;BYWEEKNO=1", "BYWEEKNO is not supported"),
        ("FREQ=DAILY;X-NAME=1", "X-NAME is not supported"),
        ("FREQ=DAILY;" + "INTERVAL=1;" * 30, "at most 200 characters"),
    ],
)
def test_anything_outside_the_subset_is_refused_naming_the_part(given, reason):
    with pytest.raises(RecurrenceError, match=reason.replace("(", r"\(").replace(".", r"\.")):
        normalize(given)


def test_a_date_only_until_stays_a_date_and_does_not_grow_the_rule():
    # (It used to be stored as YYYYMMDDT235959Z UTC; it now ends with the user's local day.)
    days = [str(day) for day in range(1, 32)]
    while len("FREQ=MONTHLY;BYMONTHDAY=" + ",".join(days) + ";UNTIL=20261231") < 194:
        days.append(str(-len(days) + 30))  # -1, -2, ...
    rule = "FREQ=MONTHLY;BYMONTHDAY=" + ",".join(days) + ";UNTIL=20261231"
    assert 194 <= len(rule) <= 200
    assert normalize(rule).endswith(";UNTIL=20261231")
    assert len(normalize(rule)) <= 200


# --- the next occurrence --------------------------------------------------------------------------


def test_weekly_on_monday_gives_the_next_monday():
    # Given a task due Monday 2026-11-23 09:00Z, completed early on the Friday before
    following = next_occurrence("FREQ=WEEKLY;BYDAY=MO", utc(2026, 11, 23, 9), utc(2026, 11, 20, 8))
    # Then the next is due the Monday after, at the same time
    assert following is not None
    assert following.due_date == utc(2026, 11, 30, 9)
    assert following.recurrence == "FREQ=WEEKLY;BYDAY=MO"


def test_a_late_completion_skips_to_the_first_occurrence_after_it():
    # Given a weekly task due three weeks ago, completed now (Tuesday 2026-12-15)
    following = next_occurrence("FREQ=WEEKLY", utc(2026, 11, 23, 9), utc(2026, 12, 15, 12))
    # Then the next occurrence is the first one after the completion, not after the due date
    assert following is not None and following.due_date == utc(2026, 12, 21, 9)


def test_several_weekdays_and_intervals():
    rule = "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH"
    # Monday 2026-11-23 -> Thursday of the same week -> Monday two weeks after the first one
    first = next_occurrence(rule, utc(2026, 11, 23, 9), utc(2026, 11, 23, 10))
    assert first is not None and first.due_date == utc(2026, 11, 26, 9)
    second = next_occurrence(rule, first.due_date, first.due_date)
    assert second is not None and second.due_date == utc(2026, 12, 7, 9)
    daily = next_occurrence("FREQ=DAILY;INTERVAL=3", utc(2026, 1, 30, 7), utc(2026, 1, 1))
    assert daily is not None and daily.due_date == utc(2026, 2, 2, 7)


def test_count_is_decremented_and_exhausted():
    # Given a rule with three occurrences left
    rule = "FREQ=DAILY;COUNT=3"
    second = next_occurrence(rule, utc(2026, 11, 1, 9), utc(2026, 11, 1, 10))
    assert second is not None and second.recurrence == "FREQ=DAILY;COUNT=2"
    third = next_occurrence(second.recurrence, second.due_date, second.due_date)
    assert third is not None and third.recurrence == "FREQ=DAILY;COUNT=1"
    assert third.due_date == utc(2026, 11, 3, 9)
    # Then the last one has no successor
    assert next_occurrence(third.recurrence, third.due_date, third.due_date) is None


def test_until_is_inclusive_and_ends_the_rule():
    rule = "FREQ=DAILY;UNTIL=20261203"  # through the end of 3 December (UTC)
    last = next_occurrence(rule, utc(2026, 12, 2, 23), utc(2026, 12, 2, 23))
    assert last is not None and last.due_date == utc(2026, 12, 3, 23)
    assert last.recurrence == "FREQ=DAILY;UNTIL=20261203"
    assert next_occurrence(rule, last.due_date, last.due_date) is None
    # A completion after UNTIL creates none, even if the due date was before it
    assert next_occurrence(rule, utc(2026, 12, 1, 9), utc(2026, 12, 10)) is None
    exact = "FREQ=WEEKLY;UNTIL=20261207T090000Z"
    on_until = next_occurrence(exact, utc(2026, 11, 30, 9), utc(2026, 11, 30, 9))
    assert on_until is not None and on_until.due_date == utc(2026, 12, 7, 9)


def test_month_ends_follow_rfc_5545():
    # BYMONTHDAY=31 happens only in months that have a 31st
    rule = "FREQ=MONTHLY;BYMONTHDAY=31"
    following = next_occurrence(rule, utc(2026, 1, 31, 9), utc(2026, 1, 31, 10))
    assert following is not None and following.due_date == utc(2026, 3, 31, 9)
    after_march = next_occurrence(rule, utc(2026, 3, 31, 9), utc(2026, 3, 31, 10))
    assert after_march is not None and after_march.due_date == utc(2026, 5, 31, 9)
    # BYMONTHDAY=-1 is the last day of every month, February included (and leap years)
    last = next_occurrence("FREQ=MONTHLY;BYMONTHDAY=-1", utc(2028, 1, 31, 9), utc(2028, 1, 31))
    assert last is not None and last.due_date == utc(2028, 2, 29, 9)
    # Without BYMONTHDAY the due date's day is used: the 31st skips short months too
    plain = next_occurrence("FREQ=MONTHLY", utc(2026, 8, 31, 9), utc(2026, 8, 31, 10))
    assert plain is not None and plain.due_date == utc(2026, 10, 31, 9)
    # Several days in a month, in order
    both = next_occurrence("FREQ=MONTHLY;BYMONTHDAY=1,15", utc(2026, 2, 1, 9), utc(2026, 2, 2))
    assert both is not None and both.due_date == utc(2026, 2, 15, 9)


def test_yearly_on_the_29th_of_february_waits_for_a_leap_year():
    following = next_occurrence("FREQ=YEARLY", utc(2028, 2, 29, 9), utc(2028, 2, 29, 10))
    assert following is not None and following.due_date == utc(2032, 2, 29, 9)


@pytest.mark.parametrize(
    ("rule", "due", "expected"),
    [
        # Europe changes clocks on 2026-03-29 and 2026-10-25, the US on 2026-03-08 and 2026-11-01:
        # occurrences stay at the same UTC time across all of them.
        ("FREQ=DAILY", utc(2026, 3, 28, 9), utc(2026, 3, 29, 9)),
        ("FREQ=DAILY", utc(2026, 3, 29, 9), utc(2026, 3, 30, 9)),
        ("FREQ=DAILY", utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 23, 30)),
        ("FREQ=WEEKLY", utc(2026, 3, 5, 17), utc(2026, 3, 12, 17)),
        ("FREQ=WEEKLY", utc(2026, 10, 29, 1, 30), utc(2026, 11, 5, 1, 30)),
    ],
)
def test_occurrences_are_computed_in_utc_without_daylight_saving_shifts(rule, due, expected):
    following = next_occurrence(rule, due, due)
    assert following is not None and following.due_date == expected
    assert following.due_date - due in (timedelta(days=1), timedelta(days=7))


def test_due_dates_with_an_offset_are_read_as_the_same_instant():
    from datetime import timezone

    paris = timezone(timedelta(hours=1))
    following = next_occurrence(
        "FREQ=DAILY", datetime(2026, 11, 23, 10, tzinfo=paris), utc(2026, 11, 23, 9)
    )
    assert following is not None and following.due_date == utc(2026, 11, 24, 9)
    assert following.due_date.tzinfo == UTC


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=DAILY",
        "FREQ=DAILY;INTERVAL=7",
        "FREQ=WEEKLY",
        "FREQ=WEEKLY;INTERVAL=3;BYDAY=TU,SA",
        "FREQ=MONTHLY",
        "FREQ=MONTHLY;INTERVAL=5",
        "FREQ=MONTHLY;BYMONTHDAY=31",
        "FREQ=MONTHLY;INTERVAL=7;BYMONTHDAY=-1,30",
        "FREQ=YEARLY",
        "FREQ=YEARLY;INTERVAL=3",
    ],
)
@pytest.mark.parametrize("start", [utc(2000, 1, 31, 9), utc(2000, 2, 29, 13, 45)])
def test_a_long_gap_is_skipped_in_whole_periods_with_the_same_result(rule, start):
    # Given a pivot beyond the gap after which the start is moved forward
    from dateutil import rrule as rr

    parsed = parse(rule)
    pivot = start + SHIFT_AFTER + timedelta(days=123, hours=5)
    # When the next occurrence is computed (with the start moved)
    following = next_occurrence(rule, start, pivot)
    # Then it is what dateutil finds walking from the original start
    options = {"interval": parsed.interval or 1}
    if parsed.byday:
        options["byweekday"] = [getattr(rr, day) for day in parsed.byday]
    if parsed.bymonthday:
        options["bymonthday"] = list(parsed.bymonthday)
    frequency = getattr(rr, parsed.freq)
    expected = rr.rrule(frequency, dtstart=start, **options).after(pivot)
    assert following is not None and following.due_date == expected


def test_an_ancient_due_date_is_quick():
    import time

    started = time.perf_counter()
    following = next_occurrence("FREQ=DAILY", utc(1, 1, 1, 9), utc(2026, 11, 24, 10))
    assert following is not None and following.due_date == utc(2026, 11, 25, 9)
    assert time.perf_counter() - started < 0.5


def test_a_rule_that_never_happens_again_or_runs_past_year_9999_gives_none():
    # April has no 31st, and with INTERVAL=12 every occurrence would be in April
    never = "FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=31"
    assert next_occurrence(never, utc(2026, 4, 1, 9), utc(2026, 4, 1, 10)) is None
    assert next_occurrence("FREQ=YEARLY", utc(9999, 6, 1), utc(9999, 6, 2)) is None
