def test_create_then_get(tasks_api, user):
    # Given a user with a token
    # When they create a task
    created = tasks_api.post("/api/tasks", json={"title": "Buy milk"}, headers=user.headers)
    # Then it is returned and can be read back
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert created.headers["Location"] == f"/api/tasks/{task_id}"
    fetched = tasks_api.get(f"/api/tasks/{task_id}", headers=user.headers)
    assert fetched.status_code == 200
    assert fetched.json()["title"] == "Buy milk"
