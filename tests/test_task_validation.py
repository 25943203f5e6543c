"""What the task endpoints accept and refuse (API.md, "Tasks"): lengths after trimming, control
characters, unknown fields, enums, dates, tags, paging bounds and malformed bodies. A refusal is
always a 422 and never changes anything; it is never a 500.

Each test sends a table of cases and compares the whole table of outcomes, so one failure report
names every case that misbehaves."""

from typing import Any

import pytest


@pytest.fixture
def tasks_api(tasks_api_in_both_path_forms: Any) -> Any:
    """Every test of this module runs against `/api/tasks...` and `/api/{user_id}/tasks...`."""
    return tasks_api_in_both_path_forms


CONTROL_CHARACTERS = ["\x00", "\x01", "\x07", "\x08", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]


def count(api: Any, user: Any) -> int:
    response = api.get("/api/tasks", headers=user.headers)
    assert response.status_code == 200
    return response.json()["total"]


def post(api: Any, user: Any, body: Any) -> Any:
    return api.post("/api/tasks", json=body, headers=user.headers)


def outcome(response: Any) -> int | str:
    """The status, or a description of a 422 that does not have FastAPI's validation shape."""
    if response.status_code != 422:
        return response.status_code
    detail = response.json().get("detail")
    return 422 if isinstance(detail, list) and detail else f"422 with detail {detail!r}"


def task_json(api: Any, user: Any, task_id: int) -> dict[str, Any]:
    response = api.get(f"/api/tasks/{task_id}", headers=user.headers)
    assert response.status_code == 200
    return response.json()


# --- title ---------------------------------------------------------------------------------------

VALID_TITLES = {
    "1 char": ("a", "a"),
    "200 chars": ("x" * 200, "x" * 200),
    "200 chars padded": ("   " + "y" * 200 + "   ", "y" * 200),
    "trimmed": ("  Buy milk \t", "Buy milk"),
    "unicode": ("Ünïcödé ✓ 買い物 🥛", "Ünïcödé ✓ 買い物 🥛"),
}
INVALID_TITLES = {
    "empty": "",
    "space": " ",
    "whitespace": "   \t  ",
    "201 chars": "x" * 201,
    "201 chars padded": " " + "x" * 201 + " ",
}


def test_title_of_1_to_200_characters_after_trimming_is_accepted(tasks_api, user):
    # Given a user
    # When they create a task with each valid title
    responses = {case: post(tasks_api, user, {"title": t}) for case, (t, _) in VALID_TITLES.items()}
    # Then each is created and stored trimmed
    assert {case: r.status_code for case, r in responses.items()} == dict.fromkeys(
        VALID_TITLES, 201
    )
    stored = {
        case: task_json(tasks_api, user, r.json()["id"])["title"] for case, r in responses.items()
    }
    assert stored == {case: expected for case, (_, expected) in VALID_TITLES.items()}


def test_title_of_0_or_201_characters_after_trimming_is_422(tasks_api, user):
    # Given a user with no tasks
    # When they create tasks with titles that are empty or too long after trimming
    outcomes = {
        case: outcome(post(tasks_api, user, {"title": t})) for case, t in INVALID_TITLES.items()
    }
    # Then each is refused and nothing is stored
    assert outcomes == dict.fromkeys(INVALID_TITLES, 422)
    assert count(tasks_api, user) == 0


def test_title_rules_apply_to_put_and_patch(tasks_api, user, task_factory):
    # Given a task
    task = task_factory(user, "Original")
    # When it is replaced or patched with invalid titles
    outcomes = {
        (method, case): outcome(
            tasks_api.request(
                method, f"/api/tasks/{task.id}", json={"title": title}, headers=user.headers
            )
        )
        for method in ("PUT", "PATCH")
        for case, title in INVALID_TITLES.items()
    }
    # Then each is refused and the title is unchanged
    assert set(outcomes.values()) == {422}, outcomes
    assert task_json(tasks_api, user, task.id)["title"] == "Original"


def test_title_must_be_a_string(tasks_api, user):
    # Given a user
    # When the title is a number, a list or missing
    bodies = {"number": {"title": 42}, "list": {"title": ["a"]}, "missing": {"priority": "low"}}
    outcomes = {case: outcome(post(tasks_api, user, body)) for case, body in bodies.items()}
    # Then each is refused
    assert outcomes == dict.fromkeys(bodies, 422)
    assert count(tasks_api, user) == 0


# --- description ---------------------------------------------------------------------------------


def test_description_of_1000_characters_is_accepted(tasks_api, user):
    # Given a user
    description = "d" * 999 + "!"
    # When they create a task with a 1000-character description
    response = post(tasks_api, user, {"title": "Long", "description": description})
    # Then it is stored whole
    assert response.status_code == 201
    assert task_json(tasks_api, user, response.json()["id"])["description"] == description


def test_description_of_1001_characters_is_422(tasks_api, user, task_factory):
    # Given a task with a short description
    task = task_factory(user, "Described", description="short")
    # When a task is created, replaced or patched with a 1001-character description
    too_long = "d" * 1001
    outcomes = {
        "POST": outcome(post(tasks_api, user, {"title": "Too long", "description": too_long})),
        "PUT": outcome(
            tasks_api.put(
                f"/api/tasks/{task.id}",
                json={"title": "Described", "description": too_long},
                headers=user.headers,
            )
        ),
        "PATCH": outcome(
            tasks_api.patch(
                f"/api/tasks/{task.id}", json={"description": too_long}, headers=user.headers
            )
        ),
    }
    # Then each is refused, nothing is created and the description is kept
    assert outcomes == {"POST": 422, "PUT": 422, "PATCH": 422}
    assert count(tasks_api, user) == 1
    assert task_json(tasks_api, user, task.id)["description"] == "short"


def test_line_breaks_and_tabs_are_control_characters_in_task_text(tasks_api, user):
    # Given a user (API.md: control characters in any text are a 422)
    # When the description (which is not trimmed) has line breaks or a tab
    outcomes = {
        text: post(tasks_api, user, {"title": "Notes", "description": text}).status_code
        for text in ("Line one\nLine two", "a\r\nb", "\tindented")
    }
    # Then each is refused
    assert set(outcomes.values()) == {422}, outcomes
    assert count(tasks_api, user) == 0


# --- control characters --------------------------------------------------------------------------


def _body_with(field: str, text: str) -> dict[str, Any]:
    if field == "tags":
        return {"title": "Tagged", "tags": ["ok", text]}
    if field == "description":
        return {"title": "Described", "description": text}
    return {"title": text}


@pytest.mark.parametrize("field", ["title", "description", "tags"])
def test_control_characters_in_text_are_422(tasks_api, user, field):
    # Given a user with no tasks
    texts = {f"U+{ord(c):04X} inside": f"bad{c}text" for c in CONTROL_CHARACTERS}
    # (NUL is not whitespace: trimming must not hide it at either end)
    texts |= {"NUL first": "\x00text", "NUL last": "text\x00"}
    # When the text field contains a control character
    outcomes = {
        case: outcome(post(tasks_api, user, _body_with(field, t))) for case, t in texts.items()
    }
    # Then each is refused and nothing is stored
    assert outcomes == dict.fromkeys(texts, 422)
    assert count(tasks_api, user) == 0


def test_control_characters_are_422_in_put_and_patch(tasks_api, user, task_factory):
    # Given a task
    task = task_factory(user, "Clean", description="clean", tags=["clean"])
    before = task_json(tasks_api, user, task.id)
    # When it is replaced or patched with a control character in each text field
    outcomes = {
        (method, field, char): outcome(
            tasks_api.request(
                method,
                f"/api/tasks/{task.id}",
                json=_body_with(field, f"bad{char}text"),
                headers=user.headers,
            )
        )
        for method in ("PUT", "PATCH")
        for field in ("title", "description", "tags")
        for char in ("\x00", "\x1b")
    }
    # Then each is refused and the task is unchanged
    assert set(outcomes.values()) == {422}, outcomes
    assert task_json(tasks_api, user, task.id) == before


def test_control_characters_in_query_text_are_422(tasks_api, user):
    # Given a user
    # When the list is searched or filtered with a control character
    outcomes = {
        (param, f"U+{ord(char):04X}"): outcome(
            tasks_api.get("/api/tasks", params={param: f"milk{char}"}, headers=user.headers)
        )
        for param in ("q", "tag")
        for char in ("\x00", "\x07", "\x1b", "\x7f", "\x9f")
    }
    # Then each is refused
    assert set(outcomes.values()) == {422}, outcomes


# --- unknown fields ------------------------------------------------------------------------------


def test_unknown_fields_in_create_are_422(tasks_api, user):
    # Given a user with no tasks
    extras = {
        "user_id": {"user_id": "someone-else"},
        "id": {"id": 1},
        "created_at": {"created_at": "2020-01-01T00:00:00Z"},
        "completed_at": {"completed_at": "2020-01-01T00:00:00Z"},
        "idempotency_key": {"idempotency_key": "k"},
        "colour": {"colour": "red"},
    }
    # When the body carries a field that is not part of the task input
    outcomes = {
        case: outcome(post(tasks_api, user, {"title": "Extra", **extra}))
        for case, extra in extras.items()
    }
    # Then each is refused and nothing is stored
    assert outcomes == dict.fromkeys(extras, 422)
    assert count(tasks_api, user) == 0


def test_unknown_fields_in_updates_are_422(tasks_api, user, task_factory):
    # Given a task
    task = task_factory(user, "Original")
    before = task_json(tasks_api, user, task.id)
    requests = {
        "PUT user_id": ("PUT", "", {"title": "New", "user_id": "someone-else"}),
        "PATCH user_id": ("PATCH", "", {"user_id": "someone-else"}),
        "PATCH completed_at": ("PATCH", "", {"completed_at": "2020-01-01T00:00:00Z"}),
        "PATCH id": ("PATCH", "", {"id": task.id + 1}),
        "complete with title": ("PATCH", "/complete", {"completed": True, "title": "New"}),
        "complete with done": ("PATCH", "/complete", {"done": True}),
    }
    # When an update carries an unknown field
    outcomes = {
        case: outcome(
            tasks_api.request(
                method, f"/api/tasks/{task.id}{suffix}", json=body, headers=user.headers
            )
        )
        for case, (method, suffix, body) in requests.items()
    }
    # Then each is refused and the task is unchanged
    assert outcomes == dict.fromkeys(requests, 422)
    assert task_json(tasks_api, user, task.id) == before


# --- enums ---------------------------------------------------------------------------------------


def test_priority_must_be_low_medium_or_high(tasks_api, user):
    # Given a user
    # When tasks are created with valid and invalid priorities
    valid = {
        p: post(tasks_api, user, {"title": "P", "priority": p}) for p in ("low", "medium", "high")
    }
    invalid = {
        repr(p): outcome(post(tasks_api, user, {"title": "P", "priority": p}))
        for p in ("urgent", "HIGH", "", 3, None)
    }
    # Then the three valid ones are stored and the others refused
    assert {p: r.json()["priority"] for p, r in valid.items()} == {p: p for p in valid}
    assert invalid == dict.fromkeys(invalid, 422)
    assert count(tasks_api, user) == 3


def test_bad_enum_or_type_in_query_is_422(tasks_api, user):
    # Given a user
    cases = [
        ("status", "done"),
        ("status", "ALL"),
        ("priority", "urgent"),
        ("sort", "name"),
        ("sort", "id"),
        ("order", "up"),
        ("order", "DESC"),
        ("overdue", "maybe"),
        ("limit", "ten"),
        ("offset", "first"),
    ]
    # When the list is requested with an invalid value
    outcomes = {
        case: outcome(tasks_api.get("/api/tasks", params=dict([case]), headers=user.headers))
        for case in cases
    }
    # Then each is refused
    assert outcomes == dict.fromkeys(cases, 422)


def test_a_bad_query_value_is_located_under_query_with_its_name(tasks_api, user):
    # Given a user
    # When the list is requested with two bad values
    response = tasks_api.get(
        "/api/tasks", params={"limit": "0", "sort": "name"}, headers=user.headers
    )
    # Then the 422 names each parameter, as a query parameter
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert sorted((e["loc"], e["type"]) for e in errors) == [
        (["query", "limit"], "greater_than_equal"),
        (["query", "sort"], "enum"),
    ]


def test_the_last_of_a_repeated_query_parameter_counts_and_unknown_ones_are_ignored(
    tasks_api, user, task_factory
):
    # Given a user with a high and a low priority task
    task_factory(user, title="high", priority="high")
    task_factory(user, title="low", priority="low")
    # When the list is requested with `priority` twice and a parameter the API does not know
    response = tasks_api.get(
        "/api/tasks",
        params={"priority": ["high", "low"], "colour": "red", "limit": 5},
        headers=user.headers,
    )
    # Then the last priority filters, and the unknown parameter changes nothing
    assert response.status_code == 200
    assert [task["title"] for task in response.json()["items"]] == ["low"]
    assert response.json()["limit"] == 5


def test_limit_and_offset_bounds(tasks_api, user):
    # Given a user
    cases = {
        ("limit", 0): 422,
        ("limit", 1): 200,
        ("limit", 100): 200,
        ("limit", 101): 422,
        ("limit", -1): 422,
        ("offset", -1): 422,
        ("offset", 0): 200,
    }
    # When the list is requested with each limit or offset
    responses = {
        case: tasks_api.get("/api/tasks", params=dict([case]), headers=user.headers)
        for case in cases
    }
    # Then only values inside the bounds are accepted, and they are echoed back
    assert {case: outcome(response) for case, response in responses.items()} == cases
    for (param, value), response in responses.items():
        if response.status_code == 200:
            assert response.json()[param] == value


# --- due dates -----------------------------------------------------------------------------------

NORMALISED_DUE_DATES = {
    "2026-11-30T17:00:00Z": "2026-11-30T17:00:00Z",
    "2026-11-30T17:00:00+00:00": "2026-11-30T17:00:00Z",
    "2026-11-30T17:00:00": "2026-11-30T17:00:00Z",
    "2026-11-30T17:00": "2026-11-30T17:00:00Z",
    "2026-11-30": "2026-11-30T00:00:00Z",
    "2026-11-30T19:00:00+02:00": "2026-11-30T17:00:00Z",
    "2026-11-30T12:00:00-05:00": "2026-11-30T17:00:00Z",
    "2026-12-01T01:30:00+08:30": "2026-11-30T17:00:00Z",
    "2026-11-30T17:00:00.250Z": "2026-11-30T17:00:00.250000Z",
}


def test_due_date_is_normalised_to_utc(tasks_api, user):
    # Given a user
    # When tasks are created with due dates with and without offsets, and bare dates
    responses = {
        given: post(tasks_api, user, {"title": "Due", "due_date": given})
        for given in NORMALISED_DUE_DATES
    }
    # Then each is stored as the same instant and returned in UTC with Z
    assert {given: r.status_code for given, r in responses.items()} == dict.fromkeys(
        NORMALISED_DUE_DATES, 201
    )
    stored = {
        given: task_json(tasks_api, user, r.json()["id"])["due_date"]
        for given, r in responses.items()
    }
    assert stored == NORMALISED_DUE_DATES


def test_due_date_in_patch_and_put_is_normalised(tasks_api, user, task_factory):
    # Given a task without a due date
    task = task_factory(user, "Due later")
    path = f"/api/tasks/{task.id}"
    # When a due date with an offset is patched, then a bare date is put
    patched = tasks_api.patch(
        path, json={"due_date": "2026-11-30T18:00:00+01:00"}, headers=user.headers
    ).json()
    put = tasks_api.put(
        path, json={"title": "Due later", "due_date": "2027-01-02"}, headers=user.headers
    ).json()
    # Then both are converted to UTC
    assert patched["due_date"] == "2026-11-30T17:00:00Z"
    assert put["due_date"] == "2027-01-02T00:00:00Z"


MALFORMED_DATES = [
    "not a date",
    "2026-13-01",
    "2026-11-31",
    "2026-02-30T10:00:00Z",
    "2026-11-30T25:00:00Z",
    "2026-11-30T17:61:00Z",
    "30/11/2026",
    "2026-11-30T17:00:00+25:00",
    "tomorrow",
]


def test_malformed_due_date_in_body_is_422(tasks_api, user):
    # Given a user with no tasks
    values = [*MALFORMED_DATES, "", 1764522000, True, ["2026-11-30"], {"date": "2026-11-30"}]
    # When the due date is not an ISO 8601 date or date-time
    outcomes = {
        repr(value): outcome(post(tasks_api, user, {"title": "Due", "due_date": value}))
        for value in values
    }
    # Then each is refused
    assert outcomes == dict.fromkeys(outcomes, 422)
    assert len(outcomes) == len(values)
    assert count(tasks_api, user) == 0


def test_malformed_dates_in_query_are_422(tasks_api, user):
    # Given a user
    # When the list is filtered by a malformed date
    outcomes = {
        (param, value): outcome(
            tasks_api.get("/api/tasks", params={param: value}, headers=user.headers)
        )
        for param in ("due_before", "due_after")
        for value in MALFORMED_DATES
    }
    # Then each is refused
    assert outcomes == dict.fromkeys(outcomes, 422)


OUT_OF_RANGE_IN_UTC = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"]


def test_due_date_outside_the_utc_range_is_422_not_500(tasks_api, user, task_factory):
    # Given a task
    task = task_factory(user, "Due")
    # When a due date is well-formed but its UTC instant is outside years 1-9999
    outcomes = {
        (method, value): outcome(
            tasks_api.request(
                method,
                "/api/tasks" if method == "POST" else f"/api/tasks/{task.id}",
                json={"title": "Far away", "due_date": value},
                headers=user.headers,
            )
        )
        for method in ("POST", "PUT", "PATCH")
        for value in OUT_OF_RANGE_IN_UTC
    }
    # Then it is a validation error, not a server error, and nothing changes
    assert outcomes == dict.fromkeys(outcomes, 422)
    assert count(tasks_api, user) == 1
    assert task_json(tasks_api, user, task.id)["title"] == "Due"


def test_query_date_outside_the_utc_range_is_422_not_500(tasks_api, user):
    # Given a user
    # When the list is filtered by a date whose UTC instant is outside years 1-9999
    outcomes = {
        (param, value): outcome(
            tasks_api.get("/api/tasks", params={param: value}, headers=user.headers)
        )
        for param in ("due_before", "due_after")
        for value in OUT_OF_RANGE_IN_UTC
    }
    # Then it is a validation error, not a server error
    assert outcomes == dict.fromkeys(outcomes, 422)


# --- tags ----------------------------------------------------------------------------------------


def test_tags_are_trimmed_lower_cased_and_deduplicated(tasks_api, user):
    # Given a user
    tags = ["Home", " home ", "HOME", "Work", "errands", "work"]
    # When a task is created with repeated, padded and mixed-case tags
    response = post(tasks_api, user, {"title": "Tagged", "tags": tags})
    # Then each tag is kept once, lower-case and trimmed, in first-seen order
    assert response.status_code == 201
    assert response.json()["tags"] == ["home", "work", "errands"]
    assert task_json(tasks_api, user, response.json()["id"])["tags"] == ["home", "work", "errands"]


def test_at_most_ten_tags(tasks_api, user, task_factory):
    # Given a task with one tag
    task = task_factory(user, "Tagged", tags=["one"])
    ten = [f"tag{n}" for n in range(10)]
    eleven = [f"t{n}" for n in range(11)]
    # When tasks are created with ten and eleven tags, and eleven are patched in
    created = post(tasks_api, user, {"title": "Ten", "tags": ten})
    refused = post(tasks_api, user, {"title": "Eleven", "tags": eleven})
    patched = tasks_api.patch(f"/api/tasks/{task.id}", json={"tags": eleven}, headers=user.headers)
    # Then ten are kept and eleven are refused
    assert created.status_code == 201
    assert created.json()["tags"] == ten
    assert outcome(refused) == 422
    assert outcome(patched) == 422
    assert count(tasks_api, user) == 2
    assert task_json(tasks_api, user, task.id)["tags"] == ["one"]


def test_tag_length_is_1_to_30_characters_after_trimming(tasks_api, user):
    # Given a user
    valid = {"1 char": ("a", "a"), "30 chars": ("t" * 30, "t" * 30)}
    valid["30 chars padded"] = ("  " + "T" * 30 + "  ", "t" * 30)
    invalid = {"empty": "", "spaces": "   ", "31 chars": "t" * 31, "31 padded": f" {'t' * 31} "}
    # When tasks are created with each tag
    accepted = {
        case: post(tasks_api, user, {"title": "T", "tags": [t]}) for case, (t, _) in valid.items()
    }
    refused = {
        case: outcome(post(tasks_api, user, {"title": "T", "tags": ["fine", t]}))
        for case, t in invalid.items()
    }
    # Then 1-30 characters are stored trimmed and lower-case, the others refused
    assert {case: r.json().get("tags") for case, r in accepted.items()} == {
        case: [stored] for case, (_, stored) in valid.items()
    }
    assert refused == dict.fromkeys(invalid, 422)
    assert count(tasks_api, user) == len(valid)


def test_tags_must_be_a_list_of_strings(tasks_api, user):
    # Given a user with no tasks
    values = {"string": "home", "numbers": [1, 2], "null": None, "object": {"a": "b"}}
    # When tags is not a list of strings
    outcomes = {
        case: outcome(post(tasks_api, user, {"title": "Tagged", "tags": tags}))
        for case, tags in values.items()
    }
    # Then each is refused
    assert outcomes == dict.fromkeys(values, 422)
    assert count(tasks_api, user) == 0


def test_tag_whose_lower_case_is_longer_is_never_silently_truncated(tasks_api, user):
    # Given a 30-character tag whose lower-case form is longer ("\u0130" lower-cases to 2 chars)
    tag = "\u0130stanbul-trip-with-the-family!"
    assert len(tag) == 30
    assert len(tag.lower()) == 31
    # When a task is created with it
    response = post(tasks_api, user, {"title": "Trip", "tags": [tag]})
    # Then it is either refused, or stored lower-case and whole; never cut short
    assert response.status_code in {201, 422}, response.text
    if response.status_code == 201:
        assert task_json(tasks_api, user, response.json()["id"])["tags"] == [tag.lower()]


# --- malformed bodies ----------------------------------------------------------------------------

MALFORMED_BODIES = {
    "truncated": '{"title": "x"',
    "single quotes": "{'title': 'x'}",
    "bare word": '{"title": x}',
    "trailing comma": '{"title": "x",}',
    "form": "title=x",
    "empty": "",
    "null": "null",
    "array": '[{"title": "x"}]',
    "string": '"x"',
    "number": "42",
}


def test_malformed_or_non_object_json_body_is_422(tasks_api, user):
    # Given a user with no tasks
    headers = {**user.headers, "Content-Type": "application/json"}
    # When the create body is not a JSON object
    outcomes = {
        case: outcome(tasks_api.post("/api/tasks", content=content, headers=headers))
        for case, content in MALFORMED_BODIES.items()
    }
    # Then each is a validation error (never a 500) and nothing is stored
    assert outcomes == dict.fromkeys(MALFORMED_BODIES, 422)
    assert count(tasks_api, user) == 0


def test_body_that_is_not_utf8_is_a_client_error(tasks_api, user):
    # Given a user with no tasks
    headers = {**user.headers, "Content-Type": "application/json"}
    bodies = {"bom": b"\xff\xfe{", "latin-1": b'{"title": "caf\xe9"}'}
    # When the create body is not valid UTF-8
    statuses = {
        case: tasks_api.post("/api/tasks", content=content, headers=headers).status_code
        for case, content in bodies.items()
    }
    # Then it is refused as the client's error, never a 500, and nothing is stored
    assert set(statuses.values()) == {422}, statuses
    assert count(tasks_api, user) == 0


# --- a careless client ---------------------------------------------------------------------------

BODY_ROUTES = (("POST", ""), ("PUT", "/{id}"), ("PATCH", "/{id}"), ("PATCH", "/{id}/complete"))
NOT_JSON = {
    "form": ("application/x-www-form-urlencoded", "title=x&completed=true"),
    "text": ("text/plain", '{"title": "x"}'),
    "multipart": (
        "multipart/form-data; boundary=b",
        '--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nx\r\n--b--\r\n',
    ),
    "xml": ("application/xml", "<task><title>x</title></task>"),
}


def test_a_body_that_is_not_sent_as_json_is_415_saying_json_is_expected(
    tasks_api, user, task_factory
):
    # Given a task
    task = task_factory(user, "Original")
    before = task_json(tasks_api, user, task.id)
    # When a body is sent with a content type other than JSON, to every route that takes one
    responses = {
        (case, method, suffix): tasks_api.request(
            method,
            "/api/tasks" + suffix.format(id=task.id),
            content=content,
            headers={**user.headers, "Content-Type": content_type},
        )
        for case, (content_type, content) in NOT_JSON.items()
        for method, suffix in BODY_ROUTES
    }
    # Then each is a 415 whose JSON body names the content type to send, and nothing changed
    assert {key: r.status_code for key, r in responses.items()} == dict.fromkeys(responses, 415)
    for key, response in responses.items():
        assert "application/json" in response.json()["detail"], key
    assert task_json(tasks_api, user, task.id) == before
    assert count(tasks_api, user) == 1


def test_json_media_types_are_read_as_json_and_the_token_is_checked_before_the_content_type(
    tasks_api, user
):
    # Given a JSON body sent as application/json with a charset, and as a +json type
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        # When a task is created with it
        created = tasks_api.post(
            "/api/tasks",
            content='{"title": "x"}',
            headers={**user.headers, "Content-Type": content_type},
        )
        # Then it is created
        assert created.status_code == 201, (content_type, created.text)
    # And a form sent without a token is a 401, not a 415
    anonymous = tasks_api.post(
        "/api/tasks",
        content="title=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert anonymous.status_code == 401


MALFORMED_JSON = {
    "truncated": b'{"title": "x"',
    "not UTF-8": b'{"title": "caf\xe9"}',
    "UTF-16 byte order mark": b"\xff\xfe{",
    "deeply nested": b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "deeply nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
}


def test_any_malformed_json_however_deep_is_the_same_documented_422(tasks_api, user, task_factory):
    # Given a task
    task = task_factory(user, "Original")
    before = task_json(tasks_api, user, task.id)
    headers = {**user.headers, "Content-Type": "application/json"}
    # When each route that takes a body gets JSON that does not parse
    responses = {
        (case, method, suffix): tasks_api.request(
            method, "/api/tasks" + suffix.format(id=task.id), content=content, headers=headers
        )
        for case, content in MALFORMED_JSON.items()
        for method, suffix in BODY_ROUTES
    }
    # Then each is a 422 (never a 400) whose JSON body is one `json_invalid` error on the body
    assert {key: r.status_code for key, r in responses.items()} == dict.fromkeys(responses, 422)
    for key, response in responses.items():
        [error] = response.json()["detail"]
        assert error["type"] == "json_invalid" and error["loc"][0] == "body", (key, error)
    assert task_json(tasks_api, user, task.id) == before
    assert count(tasks_api, user) == 1


def test_a_null_in_patch_is_located_at_its_field(tasks_api, user, task_factory):
    # Given a task
    task = task_factory(user, "Original")
    # When fields that cannot be null are patched to null
    response = tasks_api.patch(
        f"/api/tasks/{task.id}",
        json={"title": None, "priority": None, "tags": None, "completed": None},
        headers=user.headers,
    )
    # Then there is one error per field, each located at the field
    assert response.status_code == 422
    assert sorted(error["loc"] for error in response.json()["detail"]) == [
        ["body", "completed"],
        ["body", "priority"],
        ["body", "tags"],
        ["body", "title"],
    ]


def test_malformed_json_body_in_updates_is_422(tasks_api, user, task_factory):
    # Given a task
    task = task_factory(user, "Original")
    before = task_json(tasks_api, user, task.id)
    headers = {**user.headers, "Content-Type": "application/json"}
    # When an update body is malformed JSON
    outcomes = {
        (method, suffix): outcome(
            tasks_api.request(
                method,
                f"/api/tasks/{task.id}{suffix}",
                content='{"completed": tru',
                headers=headers,
            )
        )
        for method, suffix in (("PUT", ""), ("PATCH", ""), ("PATCH", "/complete"))
    }
    # Then each is refused and the task is unchanged
    assert outcomes == dict.fromkeys(outcomes, 422)
    assert task_json(tasks_api, user, task.id) == before


def test_explicit_null_for_a_required_field_in_patch_is_422(tasks_api, user, task_factory):
    # Given a task
    task = task_factory(user, "Original", tags=["kept"])
    before = task_json(tasks_api, user, task.id)
    # When a non-nullable field is patched to null
    outcomes = {
        field: outcome(
            tasks_api.patch(f"/api/tasks/{task.id}", json={field: None}, headers=user.headers)
        )
        for field in ("title", "priority", "tags", "completed")
    }
    # Then each is refused and nothing changed
    assert outcomes == dict.fromkeys(outcomes, 422)
    assert task_json(tasks_api, user, task.id) == before


def test_completed_must_be_a_boolean(tasks_api, user, task_factory):
    # Given a pending task
    task = task_factory(user, "Pending")
    # When /complete, PATCH and POST get a completed value that is not a boolean
    outcomes = {}
    for value in ("yes please", 2, [True], {"v": True}, 0, 1, "true", "false"):
        body = {"completed": value}
        outcomes[("complete", repr(value))] = outcome(
            tasks_api.patch(f"/api/tasks/{task.id}/complete", json=body, headers=user.headers)
        )
        outcomes[("PATCH", repr(value))] = outcome(
            tasks_api.patch(f"/api/tasks/{task.id}", json=body, headers=user.headers)
        )
        outcomes[("POST", repr(value))] = outcome(post(tasks_api, user, {"title": "x", **body}))
    # Then each is refused and the task stays pending
    assert outcomes == dict.fromkeys(outcomes, 422)
    assert task_json(tasks_api, user, task.id)["completed"] is False
    assert count(tasks_api, user) == 1
