"""Smoke test of a running API: `make smoke API_URL=https://... TOKEN=...`.

With a token (a test account's: the run creates one task and deletes it): health; a task created,
read, completed and deleted; tags and stats; MCP `tools/list`; today's chat usage (no chat turn,
which would spend Cohere tokens). Without one: what needs no account only, i.e. health, the 401s
with their `WWW-Authenticate` challenge, and the MCP protected-resource metadata.

One line per check; exit status 0 when all pass, 1 at the first failure (what was created is
deleted first), 2 for bad usage. Standard library only, so that it runs anywhere (the deploy
workflow runs it right after `sam deploy`). The token is read from the TOKEN variable, never
printed.
"""

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

TIMEOUT_SECONDS = 30  # a cold start of the chat function plus a Neon compute waking up
HEALTH_ATTEMPTS = 5  # a stack deployed seconds ago may answer 503 or not at all for a moment
HEALTH_PAUSE_SECONDS = 3
SMOKE_TAG = "smoke-test"
MCP_PROTOCOL = "2025-06-18"


class SmokeFailure(Exception):
    pass


class Response:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise SmokeFailure(f"not JSON: {self.body[:200]!r}") from None


class Client:
    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        authorized: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Response:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", "todo-backend-smoke/1")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if authorized and self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
                return Response(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.headers, error.read())
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise SmokeFailure(f"{method} {path}: no answer ({reason})") from None


def expect(response: Response, status: int, what: str) -> Response:
    if response.status != status:
        raise SmokeFailure(
            f"{what}: expected {status}, got {response.status}: {response.body[:300]!r}"
        )
    return response


def token_subject(token: str) -> str:
    """The token's `sub` (the API's user id), read without verifying: the API verifies it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        subject = claims["sub"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise SmokeFailure("TOKEN is not a JWT with a `sub` claim") from None
    if not isinstance(subject, str) or not subject:
        raise SmokeFailure("TOKEN's `sub` claim is not a user id")
    return subject


class Smoke:
    def __init__(
        self,
        client: Client,
        out: Callable[[str], None] = print,
        health_attempts: int = HEALTH_ATTEMPTS,
    ) -> None:
        self.client = client
        self.out = out
        self.health_attempts = health_attempts
        self.task_id: int | None = None
        self.passed = 0

    def check(self, name: str, run: Callable[[], str | None]) -> None:
        started = time.monotonic()
        note = run()
        elapsed = (time.monotonic() - started) * 1000
        self.passed += 1
        self.out(f"ok    {name} ({elapsed:.0f} ms){': ' + note if note else ''}")

    # --- needs no account ---------------------------------------------------------------------

    def health(self) -> str:
        last = ""
        for attempt in range(1, self.health_attempts + 1):
            try:
                response = self.client.request("GET", "/api/health", authorized=False)
                if response.status == 200 and response.json() == {"status": "ok"}:
                    return "" if attempt == 1 else f"after {attempt} attempts"
                last = f"GET /api/health: {response.status}: {response.body[:200]!r}"
            except SmokeFailure as error:
                last = str(error)
            if attempt < self.health_attempts:
                self.out(f"..    {last}; again in {HEALTH_PAUSE_SECONDS} s")
                time.sleep(HEALTH_PAUSE_SECONDS)
        raise SmokeFailure(last)

    def tasks_need_a_token(self) -> str:
        response = self.client.request("GET", "/api/tasks", authorized=False)
        expect(response, 401, "GET /api/tasks without a token")
        challenge = response.headers.get("WWW-Authenticate") or ""
        if not challenge.startswith("Bearer"):
            raise SmokeFailure(f"401 without a Bearer challenge: {challenge!r}")
        return challenge

    def mcp_needs_a_token(self) -> str:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers = {"Accept": "application/json, text/event-stream"}
        response = self.client.request("POST", "/mcp", body, authorized=False, headers=headers)
        expect(response, 401, "POST /mcp without a token")
        challenge = response.headers.get("WWW-Authenticate") or ""
        if "resource_metadata=" not in challenge or not challenge.startswith("Bearer"):
            raise SmokeFailure(f"MCP 401 without resource_metadata: {challenge!r}")
        return challenge

    def protected_resource_metadata(self) -> str:
        path = "/.well-known/oauth-protected-resource"
        metadata = expect(self.client.request("GET", path, authorized=False), 200, path).json()
        resource = metadata.get("resource") if isinstance(metadata, dict) else None
        if not isinstance(resource, str) or not resource.endswith("/mcp"):
            raise SmokeFailure(f"{path}: no MCP resource in {metadata!r}")
        return resource

    # --- with a token -------------------------------------------------------------------------

    def create_task(self) -> str:
        title = f"Smoke test {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        body = {"title": title, "tags": [SMOKE_TAG], "priority": "low"}
        headers = {"Idempotency-Key": f"smoke-{uuid.uuid4()}"}
        response = self.client.request("POST", "/api/tasks", body, headers=headers)
        task = expect(response, 201, "POST /api/tasks").json()
        self.task_id = task.get("id")
        if not isinstance(self.task_id, int) or task.get("title") != title:
            raise SmokeFailure(f"POST /api/tasks answered {task!r}")
        return f"task {self.task_id}"

    def read_task(self) -> None:
        path = f"/api/tasks/{self.task_id}"
        task = expect(self.client.request("GET", path), 200, f"GET {path}").json()
        if task.get("id") != self.task_id or task.get("completed") is not False:
            raise SmokeFailure(f"GET {path} answered {task!r}")

    def complete_task(self) -> None:
        path = f"/api/tasks/{self.task_id}/complete"
        response = self.client.request("PATCH", path, {"completed": True})
        task = expect(response, 200, f"PATCH {path}").json()
        if task.get("completed") is not True:
            raise SmokeFailure(f"PATCH {path} answered {task!r}")

    def tags(self) -> None:
        listed = expect(self.client.request("GET", "/api/tags"), 200, "GET /api/tags").json()
        names = [item.get("name") for item in listed.get("items", [])]
        if SMOKE_TAG not in names and listed.get("total", 0) <= len(names):
            raise SmokeFailure(f"GET /api/tags does not list {SMOKE_TAG!r}: {names[:20]!r}")

    def stats(self) -> str:
        stats = expect(self.client.request("GET", "/api/stats"), 200, "GET /api/stats").json()
        if not isinstance(stats.get("completed"), int) or stats["completed"] < 1:
            raise SmokeFailure(f"GET /api/stats does not count the completed task: {stats!r}")
        return f"{stats['total']} task(s)"

    def mcp_tools(self) -> str:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MCP_PROTOCOL,
        }
        answer = expect(self.client.request("POST", "/mcp", body, headers=headers), 200, "MCP")
        tools = (answer.json().get("result") or {}).get("tools") or []
        names = sorted(tool.get("name") for tool in tools)
        if "add_task" not in names:
            raise SmokeFailure(f"MCP tools/list has no add_task: {answer.body[:300]!r}")
        return f"{len(names)} tools"

    def chat_usage(self, user_id: str) -> str:
        path = f"/api/{urllib.parse.quote(user_id, safe='')}/chat/usage"
        usage = expect(self.client.request("GET", path), 200, "GET chat usage").json()
        if not all(isinstance(usage.get(key), int) for key in ("turns", "turn_limit", "tokens")):
            raise SmokeFailure(f"chat usage answered {usage!r}")
        return f"{usage['turns']}/{usage['turn_limit']} turns today"

    def delete_task(self) -> None:
        path = f"/api/tasks/{self.task_id}"
        expect(self.client.request("DELETE", path), 204, f"DELETE {path}")
        self.task_id = None
        expect(self.client.request("GET", path), 404, f"GET {path} after DELETE")

    def clean_up(self) -> None:
        """Delete the task a failed run left behind (best effort; said when it fails)."""
        if self.task_id is None:
            return
        try:
            response = self.client.request("DELETE", f"/api/tasks/{self.task_id}")
            self.out(f"..    clean-up: DELETE /api/tasks/{self.task_id}: {response.status}")
        except SmokeFailure as error:
            self.out(f"..    clean-up failed, delete task {self.task_id} by hand: {error}")

    def run(self) -> None:
        self.check("GET /api/health", self.health)
        self.check("GET /api/tasks without a token: 401", self.tasks_need_a_token)
        self.check("POST /mcp without a token: 401", self.mcp_needs_a_token)
        self.check("GET /.well-known/oauth-protected-resource", self.protected_resource_metadata)
        if not self.client.token:
            self.out("--    no TOKEN: the checks that need an account were skipped")
            return
        user_id = token_subject(self.client.token)
        try:
            self.check("POST /api/tasks", self.create_task)
            self.check("GET /api/tasks/{id}", self.read_task)
            self.check("PATCH /api/tasks/{id}/complete", self.complete_task)
            self.check("GET /api/tags", self.tags)
            self.check("GET /api/stats", self.stats)
            self.check("POST /mcp tools/list", self.mcp_tools)
            self.check("GET /api/{user_id}/chat/usage", lambda: self.chat_usage(user_id))
            self.check("DELETE /api/tasks/{id}", self.delete_task)
        finally:
            self.clean_up()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("api_url", nargs="?", default=os.environ.get("API_URL", ""))
    parser.add_argument(
        "--attempts",
        type=int,
        default=HEALTH_ATTEMPTS,
        help=f"tries of the health check, {HEALTH_PAUSE_SECONDS} s apart (default %(default)s)",
    )
    args = parser.parse_args(argv)
    url = args.api_url.strip()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        print(
            "error: give the API's URL: make smoke API_URL=https://... [TOKEN=...]", file=sys.stderr
        )
        return 2
    token = os.environ.get("TOKEN", "").strip() or None
    print(f"==> smoke test of {url} ({'with' if token else 'without'} a token)", flush=True)
    smoke = Smoke(
        Client(url, token),
        out=lambda line: print(line, flush=True),
        health_attempts=max(1, args.attempts),
    )
    try:
        smoke.run()
    except SmokeFailure as error:
        print(f"FAIL  {error}", flush=True)
        return 1
    except (AttributeError, KeyError, TypeError) as error:  # an answer of an unexpected shape
        print(f"FAIL  unexpected answer: {type(error).__name__}: {error}", flush=True)
        return 1
    print(f"==> all {smoke.passed} checks passed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
