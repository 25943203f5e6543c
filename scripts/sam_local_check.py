"""Checks a running `sam local start-api` (scripts/sam_local_smoke.sh): health, an authenticated
create and list through the tasks function, a list through the chat function, and a 401.

    python -m scripts.sam_local_check BASE_URL [--wait SECONDS] [--pid SAM_PID]

SAM answers 200 with an error body when a function fails to start, so every body is checked, not
only the status. Only BASE_URL (a loopback address) is contacted.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any


class CheckFailed(AssertionError):
    pass


def request(
    method: str, url: str, token: str | None = None, body: Any = None, timeout: float = 120
) -> tuple[int, dict[str, str], str]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    call = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)
    print(f"ok: {message.split(':')[0]}", flush=True)


def wait_for_health(base: str, seconds: float, pid: int | None) -> None:
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                raise CheckFailed(f"sam local exited before answering ({last})") from None
        try:
            status, _, body = request("GET", f"{base}/api/health", timeout=60)
            if status == 200 and body.strip() and json.loads(body) == {"status": "ok"}:
                print(f"ok: GET /api/health answered {body.strip()}", flush=True)
                return
            last = f"{status} {body[:300]!r}"
        except (OSError, ValueError) as error:
            last = repr(error)
        time.sleep(2)
    raise CheckFailed(f"GET /api/health never answered {{'status': 'ok'}}; last: {last}")


def check(base: str, functions: set[str]) -> None:
    import jwt

    from scripts.dev_secret import dev_auth_secret

    user = f"smoke-{uuid.uuid4().hex[:10]}"
    now = int(time.time())
    token = jwt.encode({"sub": user, "iat": now, "exp": now + 600}, dev_auth_secret(), "HS256")

    status, _, body = request("GET", f"{base}/api/tasks")
    expect(
        status == 401 and "detail" in json.loads(body),
        f"GET /api/tasks without a token is 401: {status} {body[:300]}",
    )

    title = f"sam local smoke {user}"
    status, headers, body = request(
        "POST", f"{base}/api/tasks", token, {"title": title, "tags": ["smoke"]}
    )
    created = json.loads(body) if body.startswith("{") else {}
    expect(
        status == 201 and created.get("title") == title and isinstance(created.get("id"), int),
        f"POST /api/tasks created the task: {status} {body[:300]}",
    )
    location = {k.lower(): v for k, v in headers.items()}.get("location")
    expect(location == f"/api/tasks/{created['id']}", f"Location names it: {location}")

    status, _, body = request("GET", f"{base}/api/tasks?tag=smoke", token)
    listed = json.loads(body) if body.startswith("{") else {}
    expect(
        status == 200
        and [task["id"] for task in listed.get("items", [])] == [created["id"]]
        and listed.get("total") == 1,
        f"GET /api/tasks lists exactly it: {status} {body[:300]}",
    )

    status, _, body = request("GET", f"{base}/api/{user}/conversations", token)
    expect(
        status == 200 and json.loads(body) == {"items": [], "total": 0},
        f"GET /api/{{user_id}}/conversations (chat function) answers: {status} {body[:300]}",
    )

    if "mcp" in functions:
        status, _, body = request("GET", f"{base}/.well-known/oauth-protected-resource")
        metadata = json.loads(body) if body.startswith("{") else {}
        expect(
            status == 200 and str(metadata.get("resource", "")).endswith("/mcp"),
            f"GET /.well-known/oauth-protected-resource (mcp function) answers: "
            f"{status} {body[:300]}",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_url")
    parser.add_argument("--wait", type=float, default=0, help="wait this long for /api/health")
    parser.add_argument("--pid", type=int, help="fail early when this process (sam) exits")
    args = parser.parse_args()
    base = args.base_url.rstrip("/")
    try:
        if args.wait:
            wait_for_health(base, args.wait, args.pid)
        from scripts.functions import HTTP_FUNCTIONS, module_exists

        check(base, {name for name, module in HTTP_FUNCTIONS if module_exists(module)})
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print("sam local smoke test passed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
