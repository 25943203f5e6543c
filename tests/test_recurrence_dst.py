"""Recurrence and reminders on the user's wall-clock time (issue 20; API.md third wave, "Time
zones"): across daylight-saving changes in both directions, through the handlers in both path
forms, checked against zoneinfo; and a property test against dateutil over local wall-clock time,
localised by RFC 5545's rules."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_time_zones import ZONES, create, instant, local_start, set_zone, url
from todo_backend.tasks.recurrence import next_occurrence


@pytest.fixture(params=["/api", "/api/{user_id}"])
def form(request: pytest.FixtureRequest) -> str:
    return request.param


def complete(api: Any, user: Any, form: str, task: dict[str, Any]) -> dict[str, Any]:
    """Complete `task` and return its next occurrence."""
    done = api.patch(
        url(form, user, f"/tasks/{task['id']}/complete"),
        json={"completed": True},
        headers=user.headers,
    )
    assert done.status_code == 200, done.text
    following = done.json()["next_task_id"]
    assert following is not None
    got = api.get(url(form, user, f"/tasks/{following}"), headers=user.headers)
    assert got.status_code == 200
    return got.json()


def at(zone: str, *parts: int) -> datetime:
    """A local wall-clock time in `zone` as RFC 5545 resolves it (fold=0), in UTC."""
    return datetime(*parts, tzinfo=ZoneInfo(zone), fold=0).astimezone(UTC)


# Each zone's daylight-saving changes in 2027 (none for the zones without DST).
CHANGES = {
    "America/New_York": [date(2027, 3, 14), date(2027, 11, 7)],
    "Europe/Berlin": [date(2027, 3, 28), date(2027, 10, 31)],
    "Australia/Lord_Howe": [date(2027, 4, 4), date(2027, 10, 3)],
    "Asia/Kolkata": [date(2027, 3, 14)],
    "Pacific/Kiritimati": [date(2027, 3, 14)],
    "Pacific/Pago_Pago": [date(2027, 3, 14)],
    "UTC": [date(2027, 3, 14)],
}


@pytest.mark.parametrize("zone", ZONES)
def test_a_daily_task_at_nine_stays_at_nine_local_across_each_change(tasks_api, user, form, zone):
    set_zone(tasks_api, user, zone, form)
    for change in CHANGES[zone]:
        # Given a daily task due 09:00 local the day before a change, reminded at 08:30
        before = change - timedelta(days=1)
        task = create(
            tasks_api,
            user,
            form,
            due_date=f"{before}T09:00:00",
            remind_at=f"{before}T08:30:00",
            recurrence="FREQ=DAILY",
        )
        # When it is completed, and the next one too
        for day in (change, change + timedelta(days=1)):
            task = complete(tasks_api, user, form, task)
            # Then each next one is due 09:00 local on the next date, reminded at 08:30 local
            assert instant(task["due_date"]) == at(zone, day.year, day.month, day.day, 9)
            assert task["due_date"].startswith(f"{day}T09:00:00")
            assert instant(task["remind_at"]) == at(zone, day.year, day.month, day.day, 8, 30)


def test_the_contract_s_new_york_example(tasks_api, user, form):
    set_zone(tasks_api, user, "America/New_York", form)
    task = create(tasks_api, user, form, due_date="2027-03-13T14:00:00Z", recurrence="FREQ=DAILY")
    assert task["due_date"] == "2027-03-13T09:00:00-05:00"
    following = complete(tasks_api, user, form, task)
    assert following["due_date"] == "2027-03-14T09:00:00-04:00"
    assert instant(following["due_date"]) == datetime(2027, 3, 14, 13, tzinfo=UTC)


def test_an_occurrence_in_a_gap_moves_later_and_the_next_is_back_at_the_series_time(
    tasks_api, user, form
):
    # Given a daily task at 02:30 New York time, the day before spring forward
    set_zone(tasks_api, user, "America/New_York", form)
    task = create(
        tasks_api,
        user,
        form,
        due_date="2027-03-13T02:30:00",
        remind_at="2027-03-13T02:00:00",
        recurrence="FREQ=DAILY",
    )
    # When it is completed: 02:30 does not exist on 14 March, so it is 03:30 (later by the gap)
    gap = complete(tasks_api, user, form, task)
    assert gap["due_date"] == "2027-03-14T03:30:00-04:00"
    assert instant(gap["due_date"]) == at("America/New_York", 2027, 3, 14, 2, 30)
    # and its reminder, 02:00 (which does not exist either), is 03:00
    assert gap["remind_at"] == "2027-03-14T03:00:00-04:00"
    # When that one is completed, the next is back at the series' own 02:30
    back = complete(tasks_api, user, form, gap)
    assert back["due_date"] == "2027-03-15T02:30:00-04:00"
    assert back["remind_at"] == "2027-03-15T02:00:00-04:00"


def test_an_ambiguous_occurrence_is_its_first_instance(tasks_api, user, form):
    # Given a daily task at 01:30 New York time, the day before fall back
    set_zone(tasks_api, user, "America/New_York", form)
    task = create(tasks_api, user, form, due_date="2027-11-06T01:30:00", recurrence="FREQ=DAILY")
    # Then the next is the first 01:30 of 7 November (EDT), then 01:30 EST on the 8th
    fold = complete(tasks_api, user, form, task)
    assert fold["due_date"] == "2027-11-07T01:30:00-04:00"
    assert instant(fold["due_date"]) == datetime(2027, 11, 7, 5, 30, tzinfo=UTC)
    after = complete(tasks_api, user, form, fold)
    assert after["due_date"] == "2027-11-08T01:30:00-05:00"


def test_weekly_byday_names_local_days_across_the_change(tasks_api, user, form):
    # Given a task every Monday and Friday at 00:30 Berlin time (the previous day in UTC)
    set_zone(tasks_api, user, "Europe/Berlin", form)
    task = create(
        tasks_api,
        user,
        form,
        due_date="2027-03-26T00:30:00",  # a Friday
        recurrence="FREQ=WEEKLY;BYDAY=MO,FR",
    )
    # Then the next are Monday 29 March and Friday 2 April, 00:30 local (now CEST)
    monday = complete(tasks_api, user, form, task)
    assert monday["due_date"] == "2027-03-29T00:30:00+02:00"
    friday = complete(tasks_api, user, form, monday)
    assert friday["due_date"] == "2027-04-02T00:30:00+02:00"
    # and in the autumn, back to CET
    autumn = create(
        tasks_api, user, form, due_date="2027-10-29T00:30:00", recurrence="FREQ=WEEKLY;BYDAY=MO,FR"
    )
    assert complete(tasks_api, user, form, autumn)["due_date"] == "2027-11-01T00:30:00+01:00"


def test_monthly_bymonthday_across_the_change_and_the_gap(tasks_api, user, form):
    # Given a task on the 14th of every month at 02:30 New York time
    set_zone(tasks_api, user, "America/New_York", form)
    task = create(
        tasks_api,
        user,
        form,
        due_date="2027-02-14T02:30:00",
        recurrence="FREQ=MONTHLY;BYMONTHDAY=14",
    )
    # Then 14 March is 03:30 (02:30 falls in the gap), and 14 April is back at 02:30
    march = complete(tasks_api, user, form, task)
    assert march["due_date"] == "2027-03-14T03:30:00-04:00"
    april = complete(tasks_api, user, form, march)
    assert april["due_date"] == "2027-04-14T02:30:00-04:00"


@pytest.mark.parametrize("zone", ["Australia/Lord_Howe", "America/New_York", "Pacific/Kiritimati"])
def test_an_all_day_recurring_task_recurs_by_date_and_stays_all_day(tasks_api, user, form, zone):
    set_zone(tasks_api, user, zone, form)
    first = CHANGES[zone][0] - timedelta(days=1)
    task = create(
        tasks_api, user, form, due_date=first.isoformat(), recurrence="FREQ=DAILY;INTERVAL=1"
    )
    for offset in (1, 2):
        task = complete(tasks_api, user, form, task)
        day = first + timedelta(days=offset)
        assert task["all_day"] is True
        assert task["due_date"].startswith(f"{day}T00:00:00")
        assert instant(task["due_date"]) == local_start(day, zone)


def test_a_date_only_until_ends_with_the_local_day_and_stays_a_date(tasks_api, user, form):
    # Given a user at +14 with a daily task at 23:00 local until 10 January (a date)
    set_zone(tasks_api, user, "Pacific/Kiritimati", form)
    task = create(
        tasks_api,
        user,
        form,
        due_date="2027-01-09T23:00:00",
        recurrence="FREQ=DAILY;UNTIL=20270110",
    )
    assert task["recurrence"] == "FREQ=DAILY;UNTIL=20270110"
    # Then 10 January 23:00 local is still within it (09:00Z on the 10th)
    last = complete(tasks_api, user, form, task)
    assert last["due_date"] == "2027-01-10T23:00:00+14:00"
    # and nothing comes after it
    done = tasks_api.patch(
        url(form, user, f"/tasks/{last['id']}/complete"),
        json={"completed": True},
        headers=user.headers,
    )
    assert done.json()["next_task_id"] is None


# --- property: dateutil on local wall-clock time, localised by RFC 5545 --------------------------

PROPERTY_ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "America/Santiago",
    "Europe/London",
    "UTC",
]
RULES = st.sampled_from(
    [
        "FREQ=DAILY",
        "FREQ=DAILY;INTERVAL=3",
        "FREQ=WEEKLY",
        "FREQ=WEEKLY;BYDAY=MO,TH",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=SU",
        "FREQ=MONTHLY",
        "FREQ=MONTHLY;BYMONTHDAY=14",
        "FREQ=MONTHLY;BYMONTHDAY=-1",
        "FREQ=YEARLY",
    ]
)


def reference_next(rule: str, zone: str, local_due: datetime, completed: datetime) -> datetime:
    """The first occurrence of `rule` from `local_due` (naive local) whose instant, resolved by
    zoneinfo with fold=0, is after both the due instant and `completed`."""
    from dateutil.rrule import rrulestr

    info = ZoneInfo(zone)
    due = local_due.replace(tzinfo=info, fold=0).astimezone(UTC)
    for candidate in rrulestr(rule, dtstart=local_due):
        resolved = candidate.replace(tzinfo=info, fold=0).astimezone(UTC)
        if resolved > max(due, completed) and candidate > local_due:
            return resolved
    raise AssertionError("no next occurrence")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    zone=st.sampled_from(PROPERTY_ZONES),
    rule=RULES,
    local_due=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2029, 12, 31)),
    late=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
)
def test_next_occurrences_are_dateutil_s_on_local_wall_clock_time(zone, rule, local_due, late):
    # Given a task due at a local wall-clock time (its series' time), completed some time after
    local_due = local_due.replace(second=0, microsecond=0)
    info = ZoneInfo(zone)
    due = local_due.replace(tzinfo=info, fold=0).astimezone(UTC)
    series_time = None
    if due.astimezone(info).replace(tzinfo=None) != local_due:
        series_time = local_due.time()  # the due time fell in a gap: the series keeps its own
    completed = due + late
    # When the next occurrence is computed
    following = next_occurrence(rule, due, completed, zone=info, series_time=series_time)
    # Then it is dateutil's next one after both, resolved by zoneinfo with fold=0
    assert following is not None
    assert following.due_date == reference_next(rule, zone, local_due, completed)
    # and the series keeps its wall-clock time whenever the occurrence had to move off it
    shown = following.due_date.astimezone(info).time()
    assert (following.series_time or shown) == local_due.time()


def test_the_property_covers_gaps_and_folds():
    # The generated times include ones in a gap and in a fold (a sanity check of the strategy's
    # range: 2026-2029 has four changes a year in most of PROPERTY_ZONES).
    info = ZoneInfo("America/New_York")
    gap = datetime(2027, 3, 14, 2, 30)
    assert gap.replace(tzinfo=info).astimezone(UTC).astimezone(info).time() != time(2, 30)
    fold = datetime(2027, 11, 7, 1, 30)
    assert (
        fold.replace(tzinfo=info, fold=0).utcoffset()
        != fold.replace(tzinfo=info, fold=1).utcoffset()
    )
