"""`GET /api/tasks` (API.md, "List query"): every filter, every sort in both orders, paging, and
`total`. Every test scopes itself by a fresh user, so other tests' tasks never interfere."""

from typing import Any

import pytest


@pytest.fixture
def tasks_api(tasks_api_in_both_path_forms: Any) -> Any:
    """Every test of this module runs against `/api/tasks...` and `/api/{user_id}/tasks...`."""
    return tasks_api_in_both_path_forms


PAST = "2020-01-01T00:00:00Z"
FUTURE = "2999-01-01T00:00:00Z"


def listing(api: Any, user: Any, **params: Any) -> dict[str, Any]:
    response = api.get("/api/tasks", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def ids(api: Any, user: Any, **params: Any) -> list[int]:
    return [item["id"] for item in listing(api, user, **params)["items"]]


def patch(api: Any, user: Any, task_id: int, **fields: Any) -> None:
    response = api.patch(f"/api/tasks/{task_id}", json=fields, headers=user.headers)
    assert response.status_code == 200, response.text


# --- defaults ------------------------------------------------------------------------------------


def test_default_listing_is_newest_first_with_defaults_echoed(tasks_api, user, task_factory):
    # Given three tasks created one after the other
    first, second, third = (task_factory(user, f"Task {n}").id for n in range(3))
    # When the list is requested without parameters
    page = listing(tasks_api, user)
    # Then all are returned newest first, with the default paging echoed
    assert [item["id"] for item in page["items"]] == [third, second, first]
    assert page["total"] == 3
    assert page["limit"] == 50
    assert page["offset"] == 0


def test_empty_listing(tasks_api, user):
    # Given a user without tasks
    # When the list is requested
    page = listing(tasks_api, user)
    # Then it is empty
    assert page == {"items": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": None}


def test_items_are_full_task_objects(tasks_api, user):
    # Given a task created through the API
    created = tasks_api.post(
        "/api/tasks",
        json={"title": "Full", "description": "d", "tags": ["x"], "due_date": FUTURE},
        headers=user.headers,
    ).json()
    # When the list is requested
    page = listing(tasks_api, user)
    # Then the item is the same object GET returns
    assert page["items"] == [created]


# --- filters -------------------------------------------------------------------------------------


@pytest.fixture
def done_and_pending(user, task_factory) -> dict[str, list[int]]:
    pending = [task_factory(user, "Pending 1").id, task_factory(user, "Pending 2").id]
    done = [task_factory(user, "Done 1", completed=True).id]
    return {"pending": pending, "completed": done, "all": pending + done}


def test_status_filter(tasks_api, user, done_and_pending):
    # Given pending and completed tasks
    # When the list is filtered by each status
    pages = {status: listing(tasks_api, user, status=status) for status in done_and_pending}
    # Then exactly the matching tasks are returned and counted
    assert {status: sorted(i["id"] for i in page["items"]) for status, page in pages.items()} == {
        status: sorted(expected) for status, expected in done_and_pending.items()
    }
    assert {status: page["total"] for status, page in pages.items()} == {
        status: len(expected) for status, expected in done_and_pending.items()
    }


def test_status_defaults_to_all(tasks_api, user, done_and_pending):
    # Given pending and completed tasks
    # When the list is requested without a status
    # Then both kinds are returned
    assert sorted(ids(tasks_api, user)) == sorted(done_and_pending["all"])


def test_priority_filter(tasks_api, user, task_factory):
    # Given one low, two medium and three high priority tasks
    expected: dict[str, list[int]] = {"low": [], "medium": [], "high": []}
    for priority, how_many in (("low", 1), ("medium", 2), ("high", 3)):
        for n in range(how_many):
            expected[priority].append(task_factory(user, f"{priority} {n}", priority=priority).id)
    # When the list is filtered by each priority
    pages = {priority: listing(tasks_api, user, priority=priority) for priority in expected}
    # Then only that priority is returned and counted
    assert {p: sorted(i["id"] for i in page["items"]) for p, page in pages.items()} == expected
    assert {p: page["total"] for p, page in pages.items()} == {"low": 1, "medium": 2, "high": 3}


def test_tag_filter_is_case_insensitive(tasks_api, user, task_factory):
    # Given tasks with and without the tag "home"
    home = task_factory(user, "Clean", tags=["home", "weekly"]).id
    also_home = task_factory(user, "Cook", tags=["Kitchen", "HOME"]).id
    task_factory(user, "Commute", tags=["work"])
    task_factory(user, "Homework", tags=["school"])
    task_factory(user, "Untagged")
    spellings = ["home", "HOME", "Home", "  home  "]
    # When the list is filtered by the tag in any case
    pages = {tag: listing(tasks_api, user, tag=tag) for tag in spellings}
    # Then exactly the tagged tasks are returned
    assert {tag: sorted(i["id"] for i in page["items"]) for tag, page in pages.items()} == (
        dict.fromkeys(spellings, sorted([home, also_home]))
    )
    assert {tag: page["total"] for tag, page in pages.items()} == dict.fromkeys(spellings, 2)


def test_tag_filter_without_match_is_empty(tasks_api, user, task_factory):
    # Given a tagged task
    task_factory(user, "Clean", tags=["home"])
    # When the list is filtered by a tag nobody uses (nor a prefix of one)
    page = listing(tasks_api, user, tag="hom")
    # Then nothing matches
    assert page["items"] == []
    assert page["total"] == 0


def test_q_searches_title_and_description_case_insensitively(tasks_api, user, task_factory):
    # Given tasks mentioning "milk" in the title or the description, in any case
    in_title = task_factory(user, "Buy MILK").id
    in_description = task_factory(user, "Groceries", description="eggs, Milk, bread").id
    inside_word = task_factory(user, "Buttermilk pancakes").id
    task_factory(user, "Buy bread", description="no dairy")
    task_factory(user, "Nothing here")
    # When the list is searched for "mIlK"
    page = listing(tasks_api, user, q="mIlK")
    # Then every task containing it, in title or description, is returned
    assert sorted(item["id"] for item in page["items"]) == sorted(
        [in_title, in_description, inside_word]
    )
    assert page["total"] == 3


def test_q_treats_like_wildcards_literally(tasks_api, user, task_factory):
    # Given titles with and without LIKE wildcard characters
    titles = ["100% done", "100 done", "snake_case", "snakeXcase", "back\\slash", "plain"]
    by_title = {title: task_factory(user, title).id for title in titles}
    searches = {
        "%": ["100% done"],
        "_": ["snake_case"],
        "\\": ["back\\slash"],
        "0%": ["100% done"],
        "e_c": ["snake_case"],
        "%%": [],
    }
    # When the list is searched for wildcard characters
    found = {q: sorted(ids(tasks_api, user, q=q)) for q in searches}
    # Then they only match the literal characters
    assert found == {q: sorted(by_title[t] for t in expected) for q, expected in searches.items()}


@pytest.fixture
def dated(user, task_factory) -> dict[str, int]:
    return {
        "jan": task_factory(user, "January", due_date="2026-01-15T12:00:00Z").id,
        "jun": task_factory(user, "June", due_date="2026-06-15T12:00:00Z").id,
        "dec": task_factory(user, "December", due_date="2026-12-15T12:00:00Z").id,
        "none": task_factory(user, "Undated").id,
    }


def test_due_date_filters(tasks_api, user, dated):
    # Given tasks due in January, June and December, and one without a due date
    cases = {
        "before": ({"due_before": "2026-07-01T00:00:00Z"}, ["jan", "jun"]),
        "before bare date": ({"due_before": "2026-07-01"}, ["jan", "jun"]),
        "before with offset": ({"due_before": "2026-06-15T13:59:00+02:00"}, ["jan"]),
        "before other offset": ({"due_before": "2026-06-15T12:30:00+01:00"}, ["jan"]),
        "before naive is UTC": ({"due_before": "2026-06-15T12:00:01"}, ["jan", "jun"]),
        "after": ({"due_after": "2026-03-01T00:00:00Z"}, ["jun", "dec"]),
        "after just before": ({"due_after": "2026-06-15T11:59:59Z"}, ["jun", "dec"]),
        "window": ({"due_after": "2026-03-01", "due_before": "2026-09-01"}, ["jun"]),
        "before all": ({"due_before": "2026-01-01"}, []),
        "after all": ({"due_after": "2027-01-01"}, []),
    }
    # When the list is filtered by due date
    pages = {case: listing(tasks_api, user, **params) for case, (params, _) in cases.items()}
    # Then only dated tasks in the range are returned and counted
    assert {case: sorted(i["id"] for i in page["items"]) for case, page in pages.items()} == {
        case: sorted(dated[name] for name in expected) for case, (_, expected) in cases.items()
    }
    assert {case: page["total"] for case, page in pages.items()} == {
        case: len(expected) for case, (_, expected) in cases.items()
    }


def test_overdue_means_due_in_the_past_and_not_completed(tasks_api, user, task_factory):
    # Given overdue, completed-late, future, and undated tasks
    overdue = task_factory(user, "Overdue", due_date=PAST).id
    also_overdue = task_factory(user, "Just overdue", due_date="2021-06-01T00:00:00Z").id
    task_factory(user, "Done late", due_date=PAST, completed=True)
    task_factory(user, "Later", due_date=FUTURE)
    task_factory(user, "Whenever")
    # When the list is filtered with overdue=true
    page = listing(tasks_api, user, overdue="true")
    # Then only the pending tasks whose due date has passed are returned
    assert sorted(item["id"] for item in page["items"]) == sorted([overdue, also_overdue])
    assert page["total"] == 2


def test_filters_combine(tasks_api, user, task_factory):
    # Given tasks that each match all but one of several filters
    match = task_factory(user, "Call mum", priority="high", tags=["family"], due_date=PAST).id
    task_factory(user, "Call mum", priority="low", tags=["family"], due_date=PAST)
    task_factory(user, "Call mum", priority="high", tags=["work"], due_date=PAST)
    task_factory(user, "Write mum", priority="high", tags=["family"], due_date=PAST)
    task_factory(user, "Call mum", priority="high", tags=["family"], due_date=FUTURE)
    task_factory(user, "Call mum", priority="high", tags=["family"], due_date=PAST, completed=True)
    # When all filters are applied together
    page = listing(
        tasks_api, user, status="pending", priority="high", tag="family", q="call", overdue="true"
    )
    # Then only the task matching all of them is returned
    assert [item["id"] for item in page["items"]] == [match]
    assert page["total"] == 1


# --- sorting -------------------------------------------------------------------------------------


def test_sort_by_created_at_both_orders(tasks_api, user, task_factory):
    # Given three tasks created in order
    created = [task_factory(user, f"Task {n}").id for n in range(3)]
    # When sorted by created_at ascending and descending
    ascending = ids(tasks_api, user, sort="created_at", order="asc")
    descending = ids(tasks_api, user, sort="created_at", order="desc")
    # Then creation order is followed
    assert ascending == created
    assert descending == created[::-1]
    assert ids(tasks_api, user, order="asc") == created


def test_sort_by_updated_at_both_orders(tasks_api, user, task_factory):
    # Given three tasks, the oldest of which is updated last
    oldest, middle, newest = (task_factory(user, f"Task {n}").id for n in range(3))
    patch(tasks_api, user, middle, title="Touched first")
    patch(tasks_api, user, oldest, title="Touched last")
    # When sorted by updated_at
    descending = ids(tasks_api, user, sort="updated_at")
    ascending = ids(tasks_api, user, sort="updated_at", order="asc")
    # Then the most recently updated comes first in descending order
    assert descending == [oldest, middle, newest]
    assert ascending == [newest, middle, oldest]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_by_due_date_puts_undated_tasks_last_in_both_orders(
    tasks_api, user, task_factory, order
):
    # Given tasks with due dates (created out of order) and two without
    undated_first = task_factory(user, "Undated A").id
    june = task_factory(user, "June", due_date="2026-06-01T00:00:00Z").id
    jan = task_factory(user, "January", due_date="2026-01-01T00:00:00Z").id
    undated_second = task_factory(user, "Undated B").id
    dec = task_factory(user, "December", due_date="2026-12-01T00:00:00Z").id
    # When sorted by due date
    result = ids(tasks_api, user, sort="due_date", order=order)
    # Then dated tasks come first in the requested order, undated ones last
    dated = [jan, june, dec] if order == "asc" else [dec, june, jan]
    assert result[:3] == dated
    assert sorted(result[3:]) == sorted([undated_first, undated_second])


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_undated_tasks_stay_last_across_pages(tasks_api, user, task_factory, order):
    # Given one undated and two dated tasks
    undated = task_factory(user, "Undated").id
    early = task_factory(user, "Early", due_date="2026-01-01").id
    late = task_factory(user, "Late", due_date="2026-02-01").id
    # When the due-date order is read one task per page
    pages = [
        ids(tasks_api, user, sort="due_date", order=order, limit=1, offset=n) for n in range(3)
    ]
    # Then the undated task is on the last page
    dated = [early, late] if order == "asc" else [late, early]
    assert pages == [[dated[0]], [dated[1]], [undated]]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_by_priority_ranks_high_over_medium_over_low(tasks_api, user, task_factory, order):
    # Given tasks of each priority, created in an order that is neither rank nor alphabetical
    medium = task_factory(user, "M", priority="medium").id
    high = task_factory(user, "H", priority="high").id
    low = task_factory(user, "L", priority="low").id
    # When sorted by priority
    result = ids(tasks_api, user, sort="priority", order=order)
    # Then high > medium > low (descending by default is high first)
    assert result == ([high, medium, low] if order == "desc" else [low, medium, high])


def test_sort_by_priority_defaults_to_descending(tasks_api, user, task_factory):
    # Given tasks of each priority
    low = task_factory(user, "L", priority="low").id
    high = task_factory(user, "H", priority="high").id
    medium = task_factory(user, "M", priority="medium").id
    # When sorted by priority without an order
    # Then high comes first
    assert ids(tasks_api, user, sort="priority") == [high, medium, low]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_by_title(tasks_api, user, task_factory, order):
    # Given titles whose case differs, created out of order
    banana = task_factory(user, "Banana").id
    cherry = task_factory(user, "cherry").id
    apple = task_factory(user, "apple").id
    # When sorted by title
    result = ids(tasks_api, user, sort="title", order=order)
    # Then they are in alphabetical order regardless of case
    expected = [apple, banana, cherry]
    assert result == (expected if order == "asc" else expected[::-1])


def test_sorting_applies_before_paging(tasks_api, user, task_factory):
    # Given five tasks whose title order differs from their creation order
    titles = ["delta", "alpha", "echo", "charlie", "bravo"]
    by_title = {title: task_factory(user, title).id for title in titles}
    # When the title order is read two at a time
    pages = [ids(tasks_api, user, sort="title", order="asc", limit=2, offset=n) for n in (0, 2, 4)]
    # Then the pages are consecutive slices of the whole sorted list
    expected = [by_title[title] for title in sorted(titles)]
    assert pages == [expected[0:2], expected[2:4], expected[4:5]]


# --- paging and total ----------------------------------------------------------------------------


def test_limit_and_offset_page_through_everything(tasks_api, user, task_factory):
    # Given five tasks
    created = [task_factory(user, f"Task {n}").id for n in range(5)]
    newest_first = created[::-1]
    # When the list is read two at a time
    pages = [listing(tasks_api, user, limit=2, offset=offset) for offset in (0, 2, 4)]
    # Then each page holds the next slice, echoes its paging, and counts all five
    assert [[item["id"] for item in page["items"]] for page in pages] == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:5],
    ]
    assert [(page["limit"], page["offset"], page["total"]) for page in pages] == [
        (2, 0, 5),
        (2, 2, 5),
        (2, 4, 5),
    ]


@pytest.mark.parametrize("offset", [3, 4, 1000])
def test_offset_past_the_end_still_counts_every_match(tasks_api, user, task_factory, offset):
    # Given three tasks
    for n in range(3):
        task_factory(user, f"Task {n}")
    # When a page past the end is requested
    page = listing(tasks_api, user, offset=offset, limit=10)
    # Then it is empty but the total is still three
    assert page["items"] == []
    assert page["total"] == 3
    assert page["offset"] == offset


def test_total_counts_filtered_matches_not_the_page(tasks_api, user, task_factory):
    # Given four pending and two completed tasks
    for n in range(4):
        task_factory(user, f"Pending {n}")
    for n in range(2):
        task_factory(user, f"Done {n}", completed=True)
    # When one pending task per page is requested
    page = listing(tasks_api, user, status="pending", limit=1, offset=1)
    # Then the page has one item but the total counts every pending task
    assert len(page["items"]) == 1
    assert page["items"][0]["completed"] is False
    assert page["total"] == 4


def test_limit_caps_the_page(tasks_api, user, task_factory):
    # Given more tasks than the limit
    for n in range(4):
        task_factory(user, f"Task {n}")
    # When the limit is one
    page = listing(tasks_api, user, limit=1)
    # Then one task is returned and all are counted
    assert len(page["items"]) == 1
    assert page["total"] == 4


def test_listing_is_scoped_to_the_user(tasks_api, user, other_user, task_factory):
    # Given both users have tasks matching the same filters
    mine = task_factory(user, "Shared words", tags=["same"], priority="high").id
    task_factory(other_user, "Shared words", tags=["same"], priority="high")
    task_factory(other_user, "Shared words again", tags=["same"], priority="high")
    # When the first user lists with any filter
    for params in ({}, {"q": "shared"}, {"tag": "same"}, {"priority": "high"}, {"offset": 0}):
        page = listing(tasks_api, user, **params)
        # Then only their own task is returned and counted
        assert [item["id"] for item in page["items"]] == [mine]
        assert page["total"] == 1
