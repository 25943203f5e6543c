import os


def test_probe(tasks_api, user, configure):
    r = tasks_api.post("/api/tasks", json={"title": "x", "tags": ["İ" * 30]}, headers=user.headers)
    print("tag", r.status_code, r.text[:200])
    r = tasks_api.post(
        "/api/tasks",
        json={"title": "x", "due_date": "0001-01-01T00:00:00+01:00"},
        headers=user.headers,
    )
    print("date", r.status_code, r.text[:200])
    r = tasks_api.get(
        "/api/tasks", params={"due_before": "0001-01-01T00:00:00+01:00"}, headers=user.headers
    )
    print("qdate", r.status_code, r.text[:200])
    r = tasks_api.post(
        "/api/tasks", json={"title": "\x0bHello\x1c", "description": "\x1c"}, headers=user.headers
    )
    print("vt", r.status_code, r.text[:300])
    r = tasks_api.patch("/api/tasks/1/complete", headers=user.headers)
    print("complete", r.status_code, r.text[:300])
    r = tasks_api.post(
        "/api/tasks",
        content=b"\xff\xfe",
        headers={**user.headers, "content-type": "application/json"},
    )
    print("badutf", r.status_code, r.text[:300])
    r = tasks_api.post(
        "/api/tasks", content="{bad", headers={**user.headers, "content-type": "application/json"}
    )
    print("badjson", r.status_code, r.text[:300])
    r = tasks_api.post(
        "/api/tasks",
        content='{"title": "x"}',
        headers={**user.headers, "content-type": "text/plain"},
    )
    print("textplain", r.status_code, r.text[:300])
    configure(DATABASE_URL=os.environ["DATABASE_URL"] + "&options=-c%20timezone%3DAmerica/New_York")
    r = tasks_api.post(
        "/api/tasks", json={"title": "x", "due_date": "2026-11-30T17:00:00Z"}, headers=user.headers
    )
    print("tz", r.status_code, r.text[:400])
