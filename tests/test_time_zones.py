"""Every user's own clock (issue 20; API.md third wave, "Time zones"): the settings routes, the
`Time-Zone` header, local input, output at the user's offset, all-day due dates, and the local
"today" of overdue, due_today and the `due` filter; through the Lambda handler and TestClient, in
both path forms, against zoneinfo's own computations."""

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from tests.support.database import counted_statements
from todo_backend.tasks.models import TaskListQuery
from todo_backend.tasks.service import list_tasks, task_stats
from todo_backend.users.tables import forget_zones
from todo_backend.users.zones import known_zones

ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "UTC",
]
BAD_ZONES = [
    "Mars/Olympus",
    "EST5EDT ",
    " Europe/Berlin",
    "",
    "UTC+5",
    "GMT+05:30",
    "europe/berlin",
    "Europe//Berlin",
    "../etc/passwd",
    "Europe/Berlin\x00",
    "Europe/\nBerlin",
    "A" * 10_000,
    "Europe/" + "B" * 10_000,
    "localtime",
    "Factory",
    123,
    None,
    ["UTC"],
]


@pytest.fixture(params=["/api", "/api/{user_id}"])
def form(request: pytest.FixtureRequest) -> str:
    return request.param


def url(form: str, user: Any, rest: str) -> str:
    return form.replace("{user_id}", user.id) + rest


def set_zone(api: Any, user: Any, zone: str, form: str = "/api") -> None:
    response = api.put(url(form, user, "/settings"), json={"timezone": zone}, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"timezone": zone}


def create(api: Any, user: Any, form: str = "/api", **fields: Any) -> dict[str, Any]:
    body = {"title": "t", **fields}
    response = api.post(url(form, user, "/tasks"), json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def local_start(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(), ZoneInfo(zone)).astimezone(UTC)


# --- settings ------------------------------------------------------------------------------------


def test_settings_default_to_utc_and_keep_a_zone_once_set(tasks_api, user, other_user, form):
    # Given a new user
    # When they read their settings
    first = tasks_api.get(url(form, user, "/settings"), headers=user.headers)
    # Then the zone is UTC
    assert first.status_code == 200
    assert first.json() == {"timezone": "UTC"}
    # When they set each zone in turn, the last one stays
    for zone in ZONES:
        set_zone(tasks_api, user, zone, form)
        got = tasks_api.get(url(form, user, "/settings"), headers=user.headers)
        assert got.json() == {"timezone": zone}
    # and nobody else's settings changed
    theirs = tasks_api.get("/api/settings", headers=other_user.headers)
    assert theirs.json() == {"timezone": "UTC"}


def test_settings_of_another_user_path_are_refused(tasks_api, user, other_user):
    # Given two users
    # When one reads or writes the other's settings path
    read = tasks_api.get(f"/api/{other_user.id}/settings", headers=user.headers)
    written = tasks_api.put(
        f"/api/{other_user.id}/settings", json={"timezone": "Asia/Kolkata"}, headers=user.headers
    )
    # Then both are 403 and nothing changed
    assert (read.status_code, written.status_code) == (403, 403)
    assert tasks_api.get("/api/settings", headers=other_user.headers).json()["timezone"] == "UTC"
    # and without a token: 401
    assert tasks_api.get("/api/settings").status_code == 401


@pytest.mark.parametrize("zone", BAD_ZONES, ids=lambda zone: repr(zone)[:30])
def test_an_unknown_or_malformed_zone_is_a_short_422(tasks_api, user, zone):
    # Given a user in Berlin
    set_zone(tasks_api, user, "Europe/Berlin")
    # When they send a zone that is not an accepted IANA name
    response = tasks_api.put("/api/settings", json={"timezone": zone}, headers=user.headers)
    # Then it is a 422 that does not echo a large input, and the zone is unchanged
    assert response.status_code == 422, response.text
    assert len(response.text) < 2048
    assert tasks_api.get("/api/settings", headers=user.headers).json() == {
        "timezone": "Europe/Berlin"
    }


def test_settings_bodies_that_are_not_a_zone_object_are_422(tasks_api, user):
    for body in ({}, {"timezone": "UTC", "extra": 1}, [], "UTC"):
        response = tasks_api.put("/api/settings", json=body, headers=user.headers)
        assert response.status_code == 422, body


def test_every_accepted_zone_is_one_postgresql_knows(database):
    # Given every name the API accepts (tzdata's, pinned), and PostgreSQL's own list
    rows = database.fetch_all(text("SELECT name FROM pg_timezone_names"))
    postgres = {row["name"] for row in rows}
    # Then each accepted zone is known there too
    assert known_zones() - postgres == set()
    assert {"America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"} <= known_zones()


def test_zoneinfo_reads_the_pinned_tzdata_only():
    import zoneinfo

    assert zoneinfo.TZPATH == ()
    assert ZoneInfo("Asia/Kolkata").utcoffset(datetime(2027, 1, 1)) == timedelta(hours=5.5)


# --- the Time-Zone header ------------------------------------------------------------------------


def test_the_time_zone_header_sets_a_zone_only_when_none_is_stored(tasks_api, user, form):
    # Given a user without a zone, whose front end sends its zone as a header
    headers = {**user.headers, "Time-Zone": "Asia/Kolkata"}
    # When it lists tasks
    listed = tasks_api.get(url(form, user, "/tasks"), headers=headers)
    # Then the zone is stored, and the task it creates is local to it
    assert listed.status_code == 200
    assert tasks_api.get("/api/settings", headers=user.headers).json()["timezone"] == (
        "Asia/Kolkata"
    )
    task = create(tasks_api, user, form, due_date="2027-01-15T09:00:00")
    assert task["due_date"] == "2027-01-15T09:00:00+05:30"
    # When another zone comes in the header later, it is ignored
    forget_zones()  # as in a container that has not seen this user yet
    other = {**user.headers, "Time-Zone": "Europe/Berlin"}
    fetched = tasks_api.get(url(form, user, f"/tasks/{task['id']}"), headers=other)
    assert fetched.json()["due_date"] == "2027-01-15T09:00:00+05:30"
    assert tasks_api.get("/api/settings", headers=other).json()["timezone"] == "Asia/Kolkata"


@pytest.mark.parametrize("header", ["Mars/Olympus", "UTC+5", "", "x" * 5000, "Europe/Berlin "])
def test_an_unknown_time_zone_header_is_ignored(tasks_api, user, header):
    # Given a user without a zone, whose request carries an unknown zone name
    headers = {**user.headers, "Time-Zone": header}
    # When they create a task and read their settings
    task = tasks_api.post("/api/tasks", json={"title": "t"}, headers=headers)
    settings = tasks_api.get("/api/settings", headers=headers)
    # Then both succeed and the zone is still UTC
    assert task.status_code == 201
    assert settings.json() == {"timezone": "UTC"}


# --- local input, output at the user's offset ---------------------------------------------------


@pytest.mark.parametrize("zone", ZONES)
def test_date_times_without_offset_are_local_and_come_back_with_the_offset(
    tasks_api, user, form, zone
):
    # Given a user in `zone`
    set_zone(tasks_api, user, zone, form)
    info = ZoneInfo(zone)
    # When they create a task due at 09:00 local in winter and in summer, reminded at 08:30
    for day in (date(2027, 1, 15), date(2027, 7, 15)):
        local = datetime.combine(day, time(9))
        task = create(
            tasks_api,
            user,
            form,
            due_date=local.isoformat(),
            remind_at=(local - timedelta(minutes=30)).isoformat(),
        )
        # Then each is that local time, with the zone's offset at that instant
        expected = local.replace(tzinfo=info)
        assert instant(task["due_date"]) == expected
        assert task["due_date"] == expected.isoformat().replace("+00:00", "Z")
        assert instant(task["remind_at"]) == expected - timedelta(minutes=30)
        assert task["all_day"] is False
        # and every other date-time carries the same zone's offset
        created = instant(task["created_at"])
        assert created.utcoffset() == info.utcoffset(created.replace(tzinfo=None))


@pytest.mark.parametrize("zone", ZONES)
def test_a_date_time_with_an_offset_is_that_instant_shown_at_the_users_offset(
    tasks_api, user, zone
):
    set_zone(tasks_api, user, zone)
    task = create(tasks_api, user, due_date="2027-03-01T12:00:00Z")
    assert instant(task["due_date"]) == datetime(2027, 3, 1, 12, tzinfo=UTC)
    assert instant(task["due_date"]).utcoffset() == ZoneInfo(zone).utcoffset(
        datetime(2027, 3, 1, 12, tzinfo=UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    )


def test_a_utc_user_sees_today_s_format(tasks_api, user):
    # Given a user who never set a zone
    task = create(tasks_api, user, due_date="2027-03-01T12:00:00", remind_at="2027-03-01T11:00")
    # Then dates read as UTC with Z, as before
    assert task["due_date"] == "2027-03-01T12:00:00Z"
    assert task["remind_at"] == "2027-03-01T11:00:00Z"
    assert task["created_at"].endswith("Z")


@pytest.mark.parametrize(
    ("zone", "sent", "expected_utc"),
    [
        # Spring forward: 02:30 does not exist; later by the gap (03:30 EDT)
        ("America/New_York", "2027-03-14T02:30:00", datetime(2027, 3, 14, 7, 30, tzinfo=UTC)),
        # Fall back: 01:30 happens twice; the first (EDT)
        ("America/New_York", "2027-11-07T01:30:00", datetime(2027, 11, 7, 5, 30, tzinfo=UTC)),
        ("Europe/Berlin", "2027-03-28T02:30:00", datetime(2027, 3, 28, 1, 30, tzinfo=UTC)),
        ("Europe/Berlin", "2027-10-31T02:30:00", datetime(2027, 10, 31, 0, 30, tzinfo=UTC)),
        # Lord Howe's half-hour shift: 02:15 does not exist on 2027-10-03; 01:45 twice on 04-04
        ("Australia/Lord_Howe", "2027-10-03T02:15:00", datetime(2027, 10, 2, 15, 45, tzinfo=UTC)),
        ("Australia/Lord_Howe", "2027-04-04T01:45:00", datetime(2027, 4, 3, 14, 45, tzinfo=UTC)),
    ],
)
def test_local_times_in_a_gap_or_fold_follow_rfc_5545(tasks_api, user, zone, sent, expected_utc):
    # Given a user in a zone with daylight-saving time
    set_zone(tasks_api, user, zone)
    # When a due date and a reminder fall in a gap or a fold
    task = create(tasks_api, user, due_date=sent, remind_at=sent)
    # Then each is the instant zoneinfo gives with fold=0 (gap: later by its length; fold: first)
    local = datetime.fromisoformat(sent)
    assert expected_utc == local.replace(tzinfo=ZoneInfo(zone), fold=0).astimezone(UTC)
    assert instant(task["due_date"]) == expected_utc
    assert instant(task["remind_at"]) == expected_utc


# --- all-day due dates ---------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ZONES)
def test_a_bare_date_is_all_day_at_local_midnight_and_round_trips(tasks_api, user, form, zone):
    # Given a user in `zone`
    set_zone(tasks_api, user, zone, form)
    # When they create a task with a bare date
    task = create(tasks_api, user, form, due_date="2027-03-14")
    # Then it is all-day, due at the start of that local day, with its offset
    assert task["all_day"] is True
    assert instant(task["due_date"]) == local_start(date(2027, 3, 14), zone)
    assert task["due_date"].startswith("2027-03-14T00:00:00")
    # When the task is sent back as it was returned (PUT), it stays all-day on the same date
    body = {name: task[name] for name in ("title", "due_date", "all_day")}
    replaced = tasks_api.put(
        url(form, user, f"/tasks/{task['id']}"), json=body, headers=user.headers
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["all_day"], replaced.json()["due_date"]) == (True, task["due_date"])
    # and all_day: true with a date-time takes that date-time's local date
    patched = tasks_api.patch(
        url(form, user, f"/tasks/{task['id']}"),
        json={"due_date": "2027-03-20T23:30:00", "all_day": True},
        headers=user.headers,
    )
    assert patched.json()["all_day"] is True
    assert instant(patched.json()["due_date"]) == local_start(date(2027, 3, 20), zone)
    # and all_day: false makes it a timed task at that instant
    timed = tasks_api.patch(
        url(form, user, f"/tasks/{task['id']}"), json={"all_day": False}, headers=user.headers
    ).json()
    assert (timed["all_day"], timed["due_date"]) == (False, patched.json()["due_date"])


def test_all_day_without_a_due_date_is_a_422(tasks_api, user):
    response = tasks_api.post(
        "/api/tasks", json={"title": "t", "all_day": True}, headers=user.headers
    )
    assert response.status_code == 422
    task = create(tasks_api, user, due_date="2027-01-01T10:00:00")
    patched = tasks_api.patch(
        f"/api/tasks/{task['id']}", json={"all_day": True}, headers=user.headers
    )
    assert patched.status_code == 422
    nulled = tasks_api.patch(
        f"/api/tasks/{task['id']}", json={"all_day": None}, headers=user.headers
    )
    assert nulled.status_code == 422


def test_changing_the_zone_keeps_all_day_dates_and_instants_and_publishes_nothing(
    tasks_api, user, database, form
):
    # Given a user in New York with an all-day task, a timed task and a reminder
    set_zone(tasks_api, user, "America/New_York", form)
    all_day = create(tasks_api, user, form, due_date="2027-03-14")
    timed = create(
        tasks_api, user, form, due_date="2027-03-14T09:00:00", remind_at="2027-03-14T08:00:00"
    )
    events = text("SELECT count(*) AS n FROM task_events WHERE user_id = :user")
    before = database.fetch_one(events.bindparams(user=user.id))["n"]
    # When they move to each other zone
    for zone in ZONES:
        set_zone(tasks_api, user, zone, form)
        moved = tasks_api.get(url(form, user, f"/tasks/{all_day['id']}"), headers=user.headers)
        kept = tasks_api.get(url(form, user, f"/tasks/{timed['id']}"), headers=user.headers)
        # Then the all-day task keeps its date (local midnight of it in the new zone)
        assert moved.json()["all_day"] is True
        assert moved.json()["due_date"].startswith("2027-03-14T00:00:00")
        assert instant(moved.json()["due_date"]) == local_start(date(2027, 3, 14), zone)
        # and the timed task keeps its instants, shown at the new offset
        assert instant(kept.json()["due_date"]) == instant(timed["due_date"])
        assert instant(kept.json()["remind_at"]) == instant(timed["remind_at"])
    # and no task event was published for it
    assert database.fetch_one(events.bindparams(user=user.id))["n"] == before


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("America/Santiago", date(2026, 9, 6)),  # midnight in a spring-forward gap
        ("America/Santiago", date(2026, 4, 5)),  # 00:00-01:00 twice (fall back at 24:00)
        ("America/Havana", date(2027, 3, 14)),
        ("Asia/Beirut", date(2027, 3, 28)),
        ("Asia/Beirut", date(2027, 10, 31)),
        ("Australia/Lord_Howe", date(2027, 10, 3)),
    ],
)
def test_a_zone_change_moves_all_day_tasks_to_zoneinfo_s_day_start(tasks_api, user, zone, day):
    # Given an all-day task on a day whose midnight is in a gap or a fold somewhere
    task = create(tasks_api, user, due_date=day.isoformat())
    # When the user moves to that zone
    set_zone(tasks_api, user, zone)
    # Then the task's instant is the first instant of that local day by zoneinfo (fold=0)
    got = tasks_api.get(f"/api/tasks/{task['id']}", headers=user.headers).json()
    assert instant(got["due_date"]) == local_start(day, zone)
    assert got["all_day"] is True
    # and listing it as due on that day finds it
    listed = tasks_api.get(
        "/api/tasks",
        params={"due_after": f"{day - timedelta(days=1)}T23:59:59", "due_before": f"{day}T23:59"},
        headers=user.headers,
    ).json()
    assert [item["id"] for item in listed["items"]] == [task["id"]]


# --- "today", overdue, due_today, the due filter --------------------------------------------------


def test_a_task_due_today_is_not_overdue_today_for_a_utc_user(tasks_api, user, form):
    # Given a UTC user with an all-day task due today and one due yesterday
    today = datetime.now(UTC).date()
    due_today = create(tasks_api, user, form, due_date=today.isoformat())
    yesterday = create(tasks_api, user, form, due_date=(today - timedelta(days=1)).isoformat())
    # When they look at overdue tasks and stats
    overdue = tasks_api.get(
        url(form, user, "/tasks"), params={"overdue": "true"}, headers=user.headers
    ).json()
    stats = tasks_api.get(url(form, user, "/stats"), headers=user.headers).json()
    # Then only yesterday's is overdue; today's is due today
    assert [item["id"] for item in overdue["items"]] == [yesterday["id"]]
    assert (stats["overdue"], stats["due_today"]) == (1, 1)
    assert due_today["all_day"] is True


def ids_of(page: Any) -> set[int]:
    return {item.id for item in page.items}


@pytest.mark.parametrize("zone", ZONES)
def test_today_is_the_local_day_at_an_injected_instant(database, user, task_factory, zone):
    # Given a user in `zone`, and "now" at 20:00 local on Monday 2027-03-15
    from todo_backend.users.service import put_settings

    put_settings(database, user.id, zone)
    info = ZoneInfo(zone)
    now = datetime(2027, 3, 15, 20, tzinfo=info)
    monday, tuesday = date(2027, 3, 15), date(2027, 3, 16)

    def at(day: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, time(hour, minute), info)

    tasks = {
        "all_day_monday": task_factory(user, due_date=monday),
        "all_day_tuesday": task_factory(user, due_date=tuesday),
        "all_day_sunday": task_factory(user, due_date=monday - timedelta(days=1)),
        "monday_09": task_factory(user, due_date=at(monday, 9)),
        "monday_2359": task_factory(user, due_date=at(monday, 23, 59)),
        "tuesday_0001": task_factory(user, due_date=at(tuesday, 0, 1)),
        "sunday_2359": task_factory(user, due_date=at(monday - timedelta(days=1), 23, 59)),
        "next_sunday_2359": task_factory(user, due_date=at(monday + timedelta(days=6), 23, 59)),
        "next_monday_0000": task_factory(user, due_date=at(monday + timedelta(days=7), 0)),
        "undated": task_factory(user),
    }
    named = {task.id: name for name, task in tasks.items()}

    def listed(**query: Any) -> set[str]:
        page = list_tasks(database, user.id, TaskListQuery(limit=100, **query), now=now)
        return {named[task_id] for task_id in ids_of(page)}

    # When the list is filtered by local day, at that instant
    # Then "today" is Monday in the user's zone, whatever day it is in UTC
    assert listed(due="today") == {"all_day_monday", "monday_09", "monday_2359"}
    assert listed(due="tomorrow") == {"all_day_tuesday", "tuesday_0001"}
    assert listed(due="next_7_days") == {
        "all_day_monday",
        "all_day_tuesday",
        "monday_09",
        "monday_2359",
        "tuesday_0001",
        "next_sunday_2359",
    }
    # overdue: timed ones once passed; all-day ones once their day has ended
    overdue = {"all_day_sunday", "monday_09", "sunday_2359"}
    assert listed(due="overdue") == overdue
    assert listed(overdue=True) == overdue
    assert listed(overdue=False) == set(tasks) - overdue
    assert listed(due="none") == {"undated"}
    assert listed(due="today", status="completed") == set()
    stats = task_stats(database, user.id, now=now)
    assert (stats.due_today, stats.overdue) == (3, 3)
    # and a minute before local midnight the boundaries have not moved
    just_before = datetime(2027, 3, 15, 23, 59, 30, tzinfo=info)
    page = list_tasks(database, user.id, TaskListQuery(due="today"), now=just_before)
    assert {named[i] for i in ids_of(page)} == {"all_day_monday", "monday_09", "monday_2359"}
    # and just after it, Tuesday is today and Monday's all-day task is overdue
    after = datetime(2027, 3, 16, 0, 0, 30, tzinfo=info)
    page = list_tasks(database, user.id, TaskListQuery(due="today"), now=after)
    assert {named[i] for i in ids_of(page)} == {"all_day_tuesday", "tuesday_0001"}
    page = list_tasks(database, user.id, TaskListQuery(due="overdue"), now=after)
    assert "all_day_monday" in {named[i] for i in ids_of(page)}


def test_the_due_filter_through_the_handlers(tasks_api, user, form):
    # Given a user in Kiritimati (+14) with a task due today and one tomorrow, local
    zone = "Pacific/Kiritimati"
    set_zone(tasks_api, user, zone, form)
    today = datetime.now(ZoneInfo(zone)).date()
    due_today = create(tasks_api, user, form, due_date=today.isoformat())
    tomorrow = create(tasks_api, user, form, due_date=f"{today + timedelta(days=1)}T10:00:00")

    def due(value: str) -> list[int]:
        response = tasks_api.get(
            url(form, user, "/tasks"), params={"due": value}, headers=user.headers
        )
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    # Then each lands on its local day
    assert due("today") == [due_today["id"]]
    assert due("tomorrow") == [tomorrow["id"]]
    assert set(due("next_7_days")) == {due_today["id"], tomorrow["id"]}
    assert due("overdue") == []
    assert due("none") == []
    bad = tasks_api.get(url(form, user, "/tasks"), params={"due": "later"}, headers=user.headers)
    assert bad.status_code == 422


def test_due_before_and_after_without_an_offset_are_local(tasks_api, user, form):
    # Given a user in Kolkata with tasks at 09:00 and 11:00 local
    set_zone(tasks_api, user, "Asia/Kolkata", form)
    nine = create(tasks_api, user, form, due_date="2027-05-01T09:00:00")
    eleven = create(tasks_api, user, form, due_date="2027-05-01T11:00:00")

    def listed(**params: str) -> list[int]:
        response = tasks_api.get(url(form, user, "/tasks"), params=params, headers=user.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    # Then a bound without an offset is local time (10:00 IST = 04:30Z)
    assert listed(due_before="2027-05-01T10:00:00") == [nine["id"]]
    assert listed(due_after="2027-05-01T10:00:00") == [eleven["id"]]
    # and with one it is that instant
    assert listed(due_before="2027-05-01T04:00:00Z") == [nine["id"]]


# --- the zone comes with the statement -----------------------------------------------------------


def test_a_zone_changed_elsewhere_is_noticed_by_the_next_statement(tasks_api, user, database):
    # Given a container that knows the user as UTC (it served them already)
    create(tasks_api, user, due_date="2027-05-01")
    # When another container changes their zone to Kolkata
    from todo_backend.users.service import put_settings

    put_settings(database, user.id, "Asia/Kolkata")
    from todo_backend.users.tables import remember

    remember(user.id, None)  # this container still believes UTC
    # Then a local date-time sent here is still resolved in Kolkata
    task = create(tasks_api, user, due_date="2027-05-01T09:00:00")
    assert task["due_date"] == "2027-05-01T09:00:00+05:30"
    remember(user.id, None)
    listed = tasks_api.get(
        "/api/tasks", params={"due_before": "2027-05-01T09:30:00"}, headers=user.headers
    )
    assert {item["due_date"] for item in listed.json()["items"]} == {
        "2027-05-01T00:00:00+05:30",
        "2027-05-01T09:00:00+05:30",
    }
    remember(user.id, None)
    patched = tasks_api.patch(
        f"/api/tasks/{task['id']}", json={"due_date": "2027-05-02T08:00"}, headers=user.headers
    )
    assert patched.json()["due_date"] == "2027-05-02T08:00:00+05:30"


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_each_task_route_is_still_one_statement(tasks_api, user, database, zone):
    # Given a user in `zone` whom this container has served already
    set_zone(tasks_api, user, zone)
    task = create(tasks_api, user, due_date="2027-05-01T09:00:00")
    requests = [
        ("GET", "/api/tasks", {"params": {"due": "today"}}),
        ("GET", "/api/tasks", {"params": {"overdue": "true"}}),
        ("POST", "/api/tasks", {"json": {"title": "x", "due_date": "2027-06-01"}}),
        ("GET", f"/api/tasks/{task['id']}", {}),
        ("PATCH", f"/api/tasks/{task['id']}", {"json": {"due_date": "2027-06-02T10:00"}}),
        ("PUT", f"/api/tasks/{task['id']}", {"json": {"title": "y", "due_date": "2027-06-02"}}),
        ("GET", "/api/stats", {}),
        ("GET", "/api/reminders", {}),
        ("GET", "/api/settings", {}),
        ("DELETE", f"/api/tasks/{task['id']}", {}),
    ]
    for method, path, options in requests:
        headers = {**user.headers, "Time-Zone": "Asia/Kolkata"}  # ignored: a zone is stored
        with counted_statements(database) as statements:
            response = tasks_api.request(method, path, headers=headers, **options)
        # Then each answers with one statement
        assert response.status_code < 300, (method, path, response.text)
        assert len(statements) == 1, (method, path, statements)


@pytest.mark.parametrize("zone", [*ZONES, "Europe/London"])
def test_event_snapshots_carry_the_user_s_offset_as_the_api_does(tasks_api, user, database, zone):
    # Given a user in `zone` with an all-day task and a timed one (summer and winter)
    set_zone(tasks_api, user, zone)
    created = [
        create(tasks_api, user, due_date="2027-05-01"),
        create(tasks_api, user, due_date="2027-07-01T09:00:00.250", remind_at="2027-01-01T08:00"),
    ]
    for task in created:
        row = database.fetch_one(
            text(
                "SELECT task::text AS task FROM task_events WHERE task_id = :id"
                " AND detail_type = 'Task Created'"
            ).bindparams(id=task["id"])
        )
        # Then the event's snapshot is the task exactly as the API returned it
        assert json.loads(row["task"]) == task


def test_a_zone_postgresql_does_not_know_is_refused_by_the_statement_itself(database, user):
    # Given a name that got past the name check (as a zone newer than PostgreSQL's data would)
    from todo_backend.core.errors import InvalidInputError
    from todo_backend.users.service import get_settings, put_settings

    # When it is stored
    # Then the statement refuses it: a 422, nothing stored
    with pytest.raises(InvalidInputError) as refused:
        put_settings(database, user.id, "Mars/Olympus")
    assert refused.value.status_code == 422
    assert get_settings(database, user.id).timezone == "UTC"


def test_a_time_zone_header_costs_one_statement_once_per_container_and_user(
    tasks_api, user, database
):
    # Given a new user whose front end sends its zone on every request
    headers = {**user.headers, "Time-Zone": "Asia/Kolkata"}
    # When it makes two requests
    with counted_statements(database) as first:
        tasks_api.get("/api/tasks", headers=headers)
    with counted_statements(database) as second:
        tasks_api.get("/api/tasks", headers=headers)
    # Then the first stored the zone with one statement of its own, the second needed none
    assert (len(first), len(second)) == (2, 1)


def test_export_carries_the_zone_and_the_user_s_offsets_and_erase_forgets_the_zone(tasks_api, user):
    # Given a user in Kolkata with a task
    set_zone(tasks_api, user, "Asia/Kolkata")
    task = create(tasks_api, user, due_date="2027-05-01T09:00:00")
    # When they export their data
    exported = tasks_api.get(f"/api/{user.id}/export", headers=user.headers).json()
    # Then the settings name the zone and the task is as the API returns it
    assert exported["settings"] == {"timezone": "Asia/Kolkata"}
    assert exported["tasks"] == [task]
    # When they erase their data, the zone goes too
    assert tasks_api.delete(f"/api/{user.id}/data", headers=user.headers).status_code == 204
    assert tasks_api.get("/api/settings", headers=user.headers).json() == {"timezone": "UTC"}
