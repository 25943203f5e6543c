"""Both path forms of the task routes (API.md "Canonical paths"): `/api/tasks...` and
`/api/{user_id}/tasks...`. `UserPathClient` sends every `/api/tasks...` request of a test in the
second form, with the `sub` of the request's own token as `{user_id}`, so the task API tests run
unchanged against both forms.

A `Location` in the canonical form of the request (`/api/{sub}/tasks/7`) is shown to the test as
`/api/tasks/7`, which is what the tests compare with; any other `Location` is left as it came, so
a wrong form still fails the test.
"""

from typing import Any
from urllib.parse import quote

import jwt

TASKS_PREFIX = "/api/tasks"
# The `{user_id}` of a request without a usable token (it is refused with 401 before the path's
# user is compared with anything).
NO_SUBJECT = "no-subject"


def token_subject(headers: dict[str, str] | None) -> str:
    """The `sub` of a request's bearer token, unverified (the app verifies it)."""
    authorization = next(
        (value for name, value in (headers or {}).items() if name.lower() == "authorization"), ""
    )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return NO_SUBJECT
    try:
        subject = jwt.decode(token.strip(), options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError:
        return NO_SUBJECT
    return subject if isinstance(subject, str) and subject else NO_SUBJECT


def canonical_path(path: str, subject: str) -> str:
    """`/api/tasks...` as `/api/{subject}/tasks...`; other paths unchanged."""
    if path != TASKS_PREFIX and not path.startswith((TASKS_PREFIX + "/", TASKS_PREFIX + "?")):
        return path
    return f"/api/{quote(subject, safe='')}{path[len('/api') :]}"


class UserPathClient:
    """A TestClient or LambdaClient whose task requests use `/api/{sub}/tasks...`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        subject = token_subject(kwargs.get("headers"))
        rewritten = canonical_path(path, subject)
        response = self.inner.request(method, rewritten, **kwargs)
        location = response.headers.get("Location")
        canonical_prefix = f"/api/{quote(subject, safe='')}/tasks/"
        if rewritten != path and location and location.startswith(canonical_prefix):
            response.headers["location"] = TASKS_PREFIX + "/" + location[len(canonical_prefix) :]
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)
