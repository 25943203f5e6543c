"""Keyset pages of `GET /api/tasks` (API.md, "Keyset pages"): `next_cursor` walks every sort in
both orders through ties and NULL due dates to the same rows, in the same order, as offset pages;
a cursor that is not one of the list's is a 422 at the cursor, never a 500."""

import base64
import json
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.database import counted_statements

SORTS = ["created_at", "updated_at", "due_date", "priority", "title"]


@pytest.fixture
def tasks_api(tasks_api_in_both_path_forms: Any) -> Any:
    """Every test of this module runs against `/api/tasks...` and `/api/{user_id}/tasks...`."""
    return tasks_api_in_both_path_forms


def listing(api: Any, user: Any, **params: Any) -> dict[str, Any]:
    response = api.get("/api/tasks", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def walk(api: Any, user: Any, **params: Any) -> tuple[list[int], list[dict[str, Any]]]:
    """Every page from the first through `next_cursor`: the ids in order, and the pages."""
    pages = [listing(api, user, **params)]
    while pages[-1]["next_cursor"] is not None:
        assert len(pages) < 50, "the cursor does not advance"
        pages.append(listing(api, user, **params, cursor=pages[-1]["next_cursor"]))
    return [item["id"] for page in pages for item in page["items"]], pages


@pytest.fixture
def tied_tasks(user: Any, task_factory: Any, database: Any) -> list[int]:
    """Eleven tasks with ties on every sort key: shared titles (in any case), priorities, due
    dates (timed and all-day) and NULL due dates, and created_at / updated_at shared by pairs."""
    specs = [
        {"title": "Alpha", "priority": "high", "due_date": "2030-01-02T10:00:00Z"},
        {"title": "alpha", "priority": "high", "due_date": "2030-01-02T10:00:00Z"},
        {"title": "Beta", "priority": "low"},
        {"title": "beta", "priority": "medium"},
        {"title": "Gamma", "priority": "medium", "due_date": "2030-01-01", "all_day": True},
        {"title": "Gamma", "priority": "low", "due_date": "2030-01-01", "all_day": True},
        {"title": "delta", "priority": "high"},
        {"title": "Delta", "priority": "low", "due_date": "2029-12-31T23:59:59.999999Z"},
        {"title": "epsilon", "priority": "medium"},
        {"title": "Zeta", "priority": "high", "due_date": "2031-06-01T00:00:00Z"},
        {"title": "zeta", "priority": "medium", "completed": True},
    ]
    created = [task_factory(user, **spec).id for spec in specs]
    # Pairs of tasks share a creation and an update instant (as rows written in one statement).
    with database.engine.begin() as connection:
        for index, task_id in enumerate(created):
            connection.execute(
                text(
                    "UPDATE tasks SET created_at = :at,"
                    " updated_at = CAST(:at AS timestamptz) - interval '1 day' WHERE id = :id"
                ),
                {"at": f"2025-01-{1 + index // 2:02d}T00:00:00Z", "id": task_id},
            )
    return created


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("limit", [1, 3, 4])
def test_cursor_pages_match_offset_pages(tasks_api, user, tied_tasks, sort, order, limit):
    # Given eleven tasks with ties on the sort key
    everything = [item["id"] for item in listing(tasks_api, user, sort=sort, order=order)["items"]]
    assert sorted(everything) == sorted(tied_tasks)
    # When every page is walked through next_cursor
    walked, pages = walk(tasks_api, user, sort=sort, order=order, limit=limit)
    # Then it gives every task once, in the offset pages' order, with the exact total each time
    assert walked == everything
    offset_pages = [
        [
            i["id"]
            for i in listing(tasks_api, user, sort=sort, order=order, limit=limit, offset=o)[
                "items"
            ]
        ]
        for o in range(0, len(everything), limit)
    ]
    assert [[item["id"] for item in page["items"]] for page in pages] == offset_pages
    assert {page["total"] for page in pages} == {len(everything)}
    # And the last page (only it) has no next cursor
    assert [page["next_cursor"] is None for page in pages] == [False] * (len(pages) - 1) + [True]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", ["due_date", "created_at"])
def test_cursor_pages_keep_the_filters(tasks_api, user, tied_tasks, sort, order):
    # Given tasks of which one is completed
    params = {"status": "pending", "sort": sort, "order": order}
    expected = [item["id"] for item in listing(tasks_api, user, **params)["items"]]
    # When the pending ones are walked two at a time
    walked, pages = walk(tasks_api, user, **params, limit=2)
    # Then the walk is the filtered list
    assert walked == expected
    assert len(expected) == len(tied_tasks) - 1
    assert {page["total"] for page in pages} == {len(expected)}


def test_a_full_last_page_has_no_next_cursor(tasks_api, user, task_factory):
    # Given exactly two tasks
    for n in range(2):
        task_factory(user, f"Task {n}")
    # When a page of two is listed
    page = listing(tasks_api, user, limit=2)
    # Then it is the last page
    assert len(page["items"]) == 2
    assert page["next_cursor"] is None


def _cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "!!!!",
        _cursor("a string"),
        _cursor(["created_at", "desc", "2025-01-01T00:00:00+00:00"]),
        _cursor(["created_at", "desc", "yesterday", 1]),
        _cursor(["created_at", "desc", "2025-01-01T00:00:00", 1]),  # no offset: ambiguous
        _cursor(["created_at", "desc", None, 1]),
        _cursor(["created_at", "desc", "2025-01-01T00:00:00+00:00", 0]),
        _cursor(["created_at", "desc", "2025-01-01T00:00:00+00:00", 2**63]),
        _cursor(["created_at", "desc", "2025-01-01T00:00:00+00:00", "1"]),
        _cursor(["created_at", "asc", "2025-01-01T00:00:00+00:00", 1]),  # another order's
        _cursor(["title", "desc", "a", 1]),  # another sort's
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_cursor_the_list_did_not_return_is_a_422_at_the_cursor(tasks_api, user, cursor):
    # When the list is asked for the page after a cursor it never returned
    response = tasks_api.get("/api/tasks", params={"cursor": cursor}, headers=user.headers)
    # Then it is a 422 located at the cursor
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["query", "cursor"]]


@pytest.mark.parametrize(
    ("sort", "key"), [("priority", 4), ("priority", "high"), ("title", 3), ("due_date", 5)]
)
def test_a_cursor_key_of_the_wrong_kind_is_a_422(tasks_api, user, sort, key):
    response = tasks_api.get(
        "/api/tasks",
        params={"sort": sort, "order": "desc", "cursor": _cursor([sort, "desc", key, 1])},
        headers=user.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_cursor_and_a_non_zero_offset_exclude_each_other(tasks_api, user, task_factory):
    # Given a first page with a next cursor
    for n in range(3):
        task_factory(user, f"Task {n}")
    cursor = listing(tasks_api, user, limit=1)["next_cursor"]
    # When the next page is asked with a non-zero offset as well
    response = tasks_api.get(
        "/api/tasks", params={"cursor": cursor, "offset": 1}, headers=user.headers
    )
    # Then it is a 422 at the cursor; with offset 0 it is the next page
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert len(listing(tasks_api, user, limit=1, cursor=cursor, offset=0)["items"]) == 1


def test_a_too_long_cursor_is_a_422(tasks_api, user):
    response = tasks_api.get("/api/tasks", params={"cursor": "a" * 301}, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("sort", SORTS)
def test_a_cursor_page_is_one_statement(tasks_api, user, tied_tasks, database, sort):
    # Given a first page's cursor (the user's zone already known)
    cursor = listing(tasks_api, user, sort=sort, limit=2)["next_cursor"]
    # When the next page is listed
    with counted_statements(database) as statements:
        page = listing(tasks_api, user, sort=sort, limit=2, cursor=cursor)
    # Then it took one statement, as an offset page does
    assert len(statements) == 1, statements
    assert len(page["items"]) == 2


# The list's order spelled out plainly over the table (API.md "List query"): no index
# expression, no deferred join, so an offset page that reorders, repeats or drops a row differs.
PLAIN_ORDER = {
    "created_at": "created_at {d}, id {d}",
    "updated_at": "updated_at {d}, id {d}",
    "due_date": "due_date IS NULL, due_date {d}, id {d}",
    "priority": "CASE priority WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END {d}, id {d}",
    "title": "lower(title) {d}, id {d}",
}
# Filters as parameters of the list and as the same condition in plain SQL.
PLAIN_FILTERS = [
    ({}, "true"),
    ({"status": "pending"}, "NOT completed"),
    ({"priority": "high"}, "priority = 'high'"),
    ({"q": "ta"}, "strpos(lower(title), 'ta') > 0 OR strpos(lower(description), 'ta') > 0"),
    ({"tag": "home"}, "'home' = ANY(tags)"),
]


def plain_order(database: Any, user: Any, sort: str, order: str, condition: str) -> list[int]:
    with database.engine.connect() as connection:
        rows = connection.execute(
            text(
                f"SELECT id FROM tasks WHERE user_id = :user AND ({condition})"
                f" ORDER BY {PLAIN_ORDER[sort].format(d=order)}"
            ),
            {"user": user.id},
        )
        return [row.id for row in rows]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", SORTS)
def test_offset_pages_are_the_plain_order_and_the_cursor_pages(
    tasks_api, user, tied_tasks, database, sort, order
):
    # Given tasks with ties on every sort key, some of them tagged
    with database.engine.begin() as connection:
        connection.execute(
            text("UPDATE tasks SET tags = '{home}' WHERE id = ANY(:ids)"),
            {"ids": tied_tasks[::3]},
        )
    for params, condition in PLAIN_FILTERS:
        expected = plain_order(database, user, sort, order, condition)
        assert expected, params
        query = {**params, "sort": sort, "order": order, "limit": 2}
        # When the list is read page by page at offsets past the first page
        offset_pages = [
            listing(tasks_api, user, **query, offset=o) for o in range(2, len(expected) + 2, 2)
        ]
        # Then each is that slice of the plain ORDER BY over the table, with the exact total
        for o, page in zip(range(2, len(expected) + 2, 2), offset_pages, strict=True):
            assert [item["id"] for item in page["items"]] == expected[o : o + 2], (params, o)
            assert page["total"] == len(expected)
            assert page["offset"] == o
            # And its next_cursor continues where it ends
            assert (page["next_cursor"] is None) == (o + 2 >= len(expected))
            if page["next_cursor"] is not None:
                after = listing(tasks_api, user, **query, cursor=page["next_cursor"])
                assert [item["id"] for item in after["items"]] == expected[o + 2 : o + 4]
        # And the cursor walk from the first page is the same order
        walked, _ = walk(tasks_api, user, **query)
        assert walked == expected, params


def test_an_offset_past_the_end_is_an_empty_page_with_the_total(tasks_api, user, tied_tasks):
    page = listing(tasks_api, user, offset=len(tied_tasks), limit=5)
    assert page["items"] == []
    assert (page["total"], page["next_cursor"]) == (len(tied_tasks), None)
    assert listing(tasks_api, user, offset=2**62)["items"] == []


def test_an_offset_page_is_one_statement(tasks_api, user, tied_tasks, database):
    listing(tasks_api, user, limit=2)  # the user's zone known
    with counted_statements(database) as statements:
        page = listing(tasks_api, user, limit=2, offset=5)
    assert len(statements) == 1, statements
    assert len(page["items"]) == 2
