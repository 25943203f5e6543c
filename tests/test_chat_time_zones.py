"""The assistant and MCP in the user's zone (issue 20; API.md third wave, "Time zones"): the
system prompt names the local date, weekday, time and zone; the model's dates without an offset
are local; `list_tasks` takes `due`, over chat and over MCP; the `Time-Zone` header works there
too; a chat turn keeps its statement count. Cohere is the fake server through the real SDK."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient

from tests.fakes.cohere_server import text_reply, tool_calls_reply
from tests.support.chat import chat_ok, fake_cohere_fixture, tool_results  # noqa: F401
from tests.support.database import counted_statements
from tests.support.lambda_events import LambdaClient
from tests.support.mcp_clients import LAMBDA_BASE_URL, LambdaTransport, mcp_session, run_async
from tests.test_mcp import MCP_HEADERS, PROTOCOL, _rpc, result_of
from todo_backend.users.tables import forget_zones


def tasks_client() -> TestClient:
    import functions.tasks.app as module

    return TestClient(module.app, raise_server_exceptions=False)


def set_zone(user: Any, zone: str) -> None:
    response = tasks_client().put("/api/settings", json={"timezone": zone}, headers=user.headers)
    assert response.status_code == 200, response.text


def local_moments(zone: str, action: Any) -> tuple[Any, list[datetime]]:
    before = datetime.now(UTC)
    result = action()
    after = datetime.now(UTC)
    info = ZoneInfo(zone)
    return result, [before.astimezone(info), after.astimezone(info)]


def test_the_system_prompt_states_the_local_date_weekday_time_and_zone(chat_api, fake_cohere, user):
    # Given a user in Kiritimati (+14: usually another date than UTC's)
    zone = "Pacific/Kiritimati"
    set_zone(user, zone)
    forget_zones()  # a chat container that has not served this user yet
    fake_cohere.script(text_reply("Hi"))
    # When they chat
    _, moments = local_moments(zone, lambda: chat_ok(chat_api, user, "What day is it?"))
    # Then the system prompt gives their local date (ISO), weekday, time and zone name
    system = fake_cohere.requests[0].messages[0]["content"]
    assert zone in system
    assert any(moment.date().isoformat() in system for moment in moments)
    assert any(moment.strftime("%A") in system for moment in moments)
    assert any(
        (moment - timedelta(minutes=delta)).strftime("%H:%M") in system
        for moment in moments
        for delta in (0, 1)
    )


def test_a_utc_user_s_prompt_names_utc(chat_api, fake_cohere, user):
    fake_cohere.script(text_reply("Hi"))
    _, moments = local_moments("UTC", lambda: chat_ok(chat_api, user, "Hello"))
    system = fake_cohere.requests[0].messages[0]["content"]
    assert "(UTC)" in system
    assert any(moment.date().isoformat() in system for moment in moments)


def test_the_model_s_dates_without_an_offset_are_local(chat_api, fake_cohere, user, database):
    # Given a user in New York, and a model that adds a task due at 09:00 (no offset) with a
    # reminder at 08:00, and one due on a bare date
    set_zone(user, "America/New_York")
    forget_zones()
    fake_cohere.script(
        tool_calls_reply(
            (
                "add_task",
                {
                    "title": "Dentist",
                    "due_date": "2027-07-01T09:00:00",
                    "remind_at": "2027-07-01T08:00:00",
                },
            ),
            ("add_task", {"title": "Pay rent", "due_date": "2027-07-01"}),
        ),
        text_reply("Done"),
    )
    # When they ask for it
    chat_ok(chat_api, user, "Dentist at 9 on July 1st, and rent that day")
    # Then the tasks are at 09:00 and 08:00 New York time (EDT), and all-day on 1 July
    results = tool_results(fake_cohere.requests[1])
    dentist, rent = results.values()
    assert dentist["due_date"] == "2027-07-01T09:00:00-04:00"
    assert dentist["remind_at"] == "2027-07-01T08:00:00-04:00"
    assert (rent["due_date"], rent["all_day"]) == ("2027-07-01T00:00:00-04:00", True)
    got = tasks_client().get("/api/tasks", headers=user.headers).json()["items"]
    instants = {item["title"]: datetime.fromisoformat(item["due_date"]) for item in got}
    assert instants["Dentist"] == datetime(2027, 7, 1, 13, tzinfo=UTC)


def test_list_tasks_takes_due_today_over_chat(chat_api, fake_cohere, user):
    # Given a user in Kolkata with a task due today (local) and one tomorrow
    zone = "Asia/Kolkata"
    set_zone(user, zone)
    today = datetime.now(ZoneInfo(zone)).date()
    client = tasks_client()
    for title, due in (("Today", today), ("Tomorrow", today + timedelta(days=1))):
        body = {"title": title, "due_date": due.isoformat()}
        assert client.post("/api/tasks", json=body, headers=user.headers).status_code == 201
    fake_cohere.script(tool_calls_reply(("list_tasks", {"due": "today"})), text_reply("One"))
    # When the model lists what is due today
    chat_ok(chat_api, user, "What's due today?")
    # Then only today's task is listed
    [listed] = tool_results(fake_cohere.requests[1]).values()
    assert [task["title"] for task in listed["tasks"]] == ["Today"]
    # and the tool's schema offers the filter
    tools = {tool["function"]["name"]: tool for tool in fake_cohere.requests[0].json["tools"]}
    due = tools["list_tasks"]["function"]["parameters"]["properties"]["due"]
    assert set(due["enum"]) == {"today", "tomorrow", "next_7_days", "overdue", "none"}


def test_the_time_zone_header_of_a_chat_request_sets_the_zone(chat_api, fake_cohere, user):
    fake_cohere.script(text_reply("Hi"))
    response = chat_api.post(
        f"/api/{user.id}/chat",
        json={"message": "Hello"},
        headers={**user.headers, "Time-Zone": "Europe/Berlin"},
    )
    assert response.status_code == 200, response.text
    assert "(Europe/Berlin)" in fake_cohere.requests[0].messages[0]["content"]
    settings = tasks_client().get("/api/settings", headers=user.headers).json()
    assert settings == {"timezone": "Europe/Berlin"}


def test_a_chat_turn_in_a_zone_runs_as_many_statements_as_in_utc(
    chat_api, fake_cohere, user, other_user, database
):
    # Given a UTC user and a Berlin user, neither seen by this container yet
    set_zone(other_user, "Europe/Berlin")
    counts = []
    for who in (user, other_user):
        forget_zones()
        fake_cohere.script(
            tool_calls_reply(("add_task", {"title": "x", "due_date": "2027-07-01T09:00:00"})),
            text_reply("Done"),
        )
        with counted_statements(database) as statements:
            chat_ok(chat_api, who, "Add x")
        counts.append(len(statements))
    # Then the zone cost no statement of its own
    assert counts[0] == counts[1]


# --- MCP -----------------------------------------------------------------------------------------


def test_mcp_list_tasks_with_due_today(user):
    # Given a user at -11 with an all-day task today and a timed one tomorrow, local
    zone = "Pacific/Pago_Pago"
    set_zone(user, zone)
    today = datetime.now(ZoneInfo(zone)).date()
    client = tasks_client()
    client.post("/api/tasks", json={"title": "Today", "due_date": str(today)}, headers=user.headers)
    client.post(
        "/api/tasks",
        json={"title": "Tomorrow", "due_date": f"{today + timedelta(days=1)}T08:00:00"},
        headers=user.headers,
    )
    import functions.mcp.app as mcp_module

    transport = LambdaTransport(mcp_module.handler)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with mcp_session(LAMBDA_BASE_URL, user.token, transport=transport) as session:
            today_list = result_of(await session.call_tool("list_tasks", {"due": "today"}))
            tomorrow = result_of(await session.call_tool("list_tasks", {"due": "tomorrow"}))
            return today_list, tomorrow

    try:
        due_today, due_tomorrow = run_async(scenario)
    finally:
        transport.shutdown()
    # Then each lists its local day's task, with the user's offset
    assert [task["title"] for task in due_today["tasks"]] == ["Today"]
    assert due_today["tasks"][0]["due_date"] == f"{today}T00:00:00-11:00"
    assert [task["title"] for task in due_tomorrow["tasks"]] == ["Tomorrow"]


def test_the_time_zone_header_of_an_mcp_call_sets_the_zone(user):
    client = LambdaClient(__import__("functions.mcp.app", fromlist=["handler"]).handler)
    headers = {
        **MCP_HEADERS,
        "authorization": f"Bearer {user.token}",
        "mcp-protocol-version": PROTOCOL,
        "time-zone": "Australia/Lord_Howe",
    }
    call = _rpc(
        "tools/call",
        {"name": "add_task", "arguments": {"title": "t", "due_date": "2027-01-15T09:00:00"}},
    )
    response = client.post("/mcp", json=call, headers=headers)
    assert response.status_code == 200, response.text
    result = json.loads(response.text)["result"]["structuredContent"]
    assert result["due_date"] == "2027-01-15T09:00:00+11:00"
    settings = tasks_client().get("/api/settings", headers=user.headers).json()
    assert settings == {"timezone": "Australia/Lord_Howe"}
