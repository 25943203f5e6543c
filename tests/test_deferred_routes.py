"""Routes declared on a `UserRouter` (the task API's) are built when a request first reaches them,
and served in both forms, `/api/...` and `/api/{user_id}/...`, with the same answers as routes
FastAPI builds at import: 405 with `Allow` for another method (HEAD included, as FastAPI does),
403 for another user's path, both forms in the document."""

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.tokens import make_token
from todo_backend.core.api import (
    CurrentUser,
    DeferredRoute,
    create_app,
    errors,
    include_user_routes,
    user_router,
)


def things_app() -> FastAPI:
    app = create_app("Things", "Deferred routes under test")
    router = user_router(app)

    @router.get("/things", responses=errors())
    async def list_things(user: CurrentUser) -> dict[str, str]:
        return {"listed_for": user}

    @router.post("/things", status_code=201, responses=errors())
    async def add_thing(user: CurrentUser) -> dict[str, str]:
        return {"added_for": user}

    @router.get("/things/{thing_id}", responses=errors(404))
    async def get_thing(user: CurrentUser, thing_id: int) -> dict[str, Any]:
        return {"thing": thing_id, "for": user}

    include_user_routes(app, router)
    return app


def built(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (route.path, ",".join(sorted(route.methods)))
        for route in app.router.routes
        if isinstance(route, DeferredRoute) and route.is_built
    )


@pytest.fixture
def app() -> FastAPI:
    return things_app()


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


def auth(user: str = "alice") -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(user)}"}


def test_nothing_is_built_at_import_and_a_request_builds_only_its_route(app, client):
    # Given a fresh app, nothing built
    assert built(app) == []
    # When one request arrives
    response = client.get("/api/things/7", headers=auth())
    # Then it is answered, and only its route was built
    assert response.status_code == 200
    assert response.json() == {"thing": 7, "for": "alice"}
    assert built(app) == [("/api/things/{thing_id}", "GET")]


def test_the_user_path_form_builds_its_alias_over_the_same_route(app, client):
    # When the `/api/{user_id}` form is requested first
    response = client.get("/api/alice/things", headers=auth())
    # Then it is served by the one built route, which the plain form now uses too
    assert response.status_code == 200
    assert response.json() == {"listed_for": "alice"}
    assert built(app) == [("/api/things", "GET"), ("/api/{user_id}/things", "GET")]
    assert client.get("/api/things", headers=auth()).json() == {"listed_for": "alice"}


@pytest.mark.parametrize("method", ["PUT", "HEAD"])
@pytest.mark.parametrize("prefix", ["/api", "/api/alice"])
def test_another_method_is_405_with_allow(app, client, prefix, method):
    # When a path is requested with a method none of its routes has
    response = client.request(method, f"{prefix}/things", headers=auth())
    # Then the answer is 405 naming the methods of every route for that path
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    # And the POST route for the same path, not involved, is still not built
    assert ("/api/things", "POST") not in built(app)


def test_a_second_route_on_the_same_path_is_reached_by_its_method(app, client):
    response = client.post("/api/alice/things", headers=auth())
    assert response.status_code == 201
    assert response.json() == {"added_for": "alice"}
    # The GET route, earlier on that path, matched the path only: not built
    assert [path for path, methods in built(app) if methods == "GET"] == []


def test_another_users_path_is_403_and_no_token_401(client):
    assert client.get("/api/bob/things", headers=auth("alice")).status_code == 403
    assert client.get("/api/alice/things").status_code == 401
    assert client.get("/api/things").status_code == 401


def test_path_parameters_are_validated_once_built(client):
    response = client.get("/api/things/seven", headers=auth())
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "thing_id"]


def test_the_document_lists_both_forms_of_every_route_before_any_request(app):
    # Given no route built, when the document is generated
    paths = app.openapi()["paths"]
    # Then both forms of every route are in it, the second with its path user and its 403
    assert list(paths) == [
        "/api/things",
        "/api/things/{thing_id}",
        "/api/{user_id}/things",
        "/api/{user_id}/things/{thing_id}",
    ]
    assert set(paths["/api/things"]) == {"get", "post"}
    canonical = paths["/api/{user_id}/things/{thing_id}"]["get"]
    assert {p["name"] for p in canonical["parameters"]} == {"user_id", "thing_id"}
    assert "403" in canonical["responses"]
    assert "403" not in paths["/api/things/{thing_id}"]["get"]["responses"]


def test_the_before_snapshot_hook_builds_every_route(app):
    from todo_backend.core.snapstart import before_snapshot

    # Given a fresh app, when SnapStart's before-snapshot hook runs (no warm-up requests)
    before_snapshot(app, None)
    # Then every route is built: no request after a restore builds one
    assert not any(isinstance(route, DeferredRoute) for route in app.router.routes)
    assert len(app.router.routes) == len(things_app().router.routes)
