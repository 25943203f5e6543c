"""What docs/reliability.md's "Retries and Idempotency-Key" promises about repeating writes
(issue 9 item 4): `{"completed": true}` is safe to repeat, the bare toggle is not, PUT/PATCH with
values are."""


def test_explicit_completion_is_idempotent(tasks_api, user, task_factory):
    task = task_factory(user, "Finish report")
    path = f"/api/tasks/{task.id}/complete"
    first = tasks_api.patch(path, json={"completed": True}, headers=user.headers)
    again = tasks_api.patch(path, json={"completed": True}, headers=user.headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["completed"] is True
    # The moment of completion is the first one: a retry changes nothing but updated_at
    assert again.json()["completed_at"] == first.json()["completed_at"]


def test_a_repeated_bare_toggle_flips_back(tasks_api, user, task_factory):
    # This is why clients retry with {"completed": true}, never with the bare toggle
    task = task_factory(user, "Water plants")
    path = f"/api/tasks/{task.id}/complete"
    states = [tasks_api.patch(path, headers=user.headers).json()["completed"] for _ in range(2)]
    assert states == [True, False]


def test_put_and_patch_with_values_are_idempotent(tasks_api, user, task_factory):
    task = task_factory(user, "Plan trip")
    body = {"title": "Plan the trip", "priority": "high", "tags": ["travel"]}
    for method in ("PUT", "PATCH"):
        responses = [
            tasks_api.request(method, f"/api/tasks/{task.id}", json=body, headers=user.headers)
            for _ in range(2)
        ]
        assert [r.status_code for r in responses] == [200, 200]
        strip = lambda task: {k: v for k, v in task.items() if k != "updated_at"}  # noqa: E731
        assert strip(responses[0].json()) == strip(responses[1].json())
