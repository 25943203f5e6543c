"""A real Better Auth server (tests/better_auth/server.mjs: the JWT and OAuth provider plugins, in
memory) run by node, and what a user's browser does there, driven headlessly with httpx: sign up,
and answer the consent page of an authorization request.

The npm packages are pinned by tests/better_auth/package-lock.json and installed by
scripts/bootstrap_tools.sh (`npm ci`); without node or them, tests using this skip and say how to
install them.
"""

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

SERVER_DIR = Path(__file__).resolve().parents[1] / "better_auth"
START_TIMEOUT_SECONDS = 30
INSTALL_HINT = "install it with scripts/bootstrap_tools.sh (npm ci --prefix tests/better_auth)"


def missing() -> str | None:
    """Why the server cannot run here, or None."""
    if shutil.which("node") is None:
        return f"node is not installed; {INSTALL_HINT}"
    if not (SERVER_DIR / "node_modules" / "@better-auth" / "oauth-provider").is_dir():
        return f"Better Auth's npm packages are not installed; {INSTALL_HINT}"
    return None


@contextmanager
def better_auth_server(mcp_resource: str) -> Iterator[str]:
    """Start the server for `mcp_resource` (the API's `<origin>/mcp`); yields its base URL."""
    process = subprocess.Popen(
        ["node", "server.mjs"],
        cwd=SERVER_DIR,
        env={**os.environ, "MCP_RESOURCE": mcp_resource, "PORT": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors: list[str] = []
    # Drained so that the server never blocks on a full pipe; kept for a failure's message.
    drain = threading.Thread(target=lambda: errors.extend(process.stderr or ()), daemon=True)
    drain.start()
    try:
        line = _first_line(process)
        if line is None:
            raise RuntimeError(f"Better Auth did not start: {''.join(errors)[-2000:]}")
        yield json.loads(line)["url"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _first_line(process: subprocess.Popen[str]) -> str | None:
    found: list[str] = []
    reader = threading.Thread(
        target=lambda: found.append(process.stdout.readline() if process.stdout else ""),
        daemon=True,
    )
    reader.start()
    reader.join(START_TIMEOUT_SECONDS)
    return found[0] if found and found[0].strip() else None


class Browser:
    """A user's browser at the front end: Better Auth's session cookie, and the API calls the
    front end's sign-up and consent pages make."""

    def __init__(self, base_url: str, grant: str | None = None) -> None:
        self.base_url = base_url
        # The scopes the user accepts on the consent page (None: all that were asked for).
        self.grant = grant
        # Better Auth checks the Origin of cookie-authenticated calls (CSRF).
        self.http = httpx.AsyncClient(
            base_url=base_url, headers={"origin": base_url}, timeout=20, follow_redirects=False
        )
        self.consented: list[str] = []

    async def sign_up(self, email: str, password: str = "a-long-enough-password-1") -> str:
        """The new user's id (the `sub` of every token Better Auth issues for them)."""
        response = await self.http.post(
            "/api/auth/sign-up/email", json={"email": email, "password": password, "name": "Ada"}
        )
        response.raise_for_status()
        return response.json()["user"]["id"]  # type: ignore[no-any-return]

    async def session_jwt(self) -> str:
        """The session JWT the front end sends to the REST API (the JWT plugin's /token)."""
        response = await self.http.get("/api/auth/token")
        response.raise_for_status()
        return response.json()["token"]  # type: ignore[no-any-return]

    async def authorize(self, authorization_url: str) -> str:
        """Open the authorization URL signed in, accept on the consent page it redirects to;
        the redirect back to the client (with `code`, `state`, `iss`)."""
        response = await self.http.get(authorization_url)
        location = response.headers.get("location", "")
        if response.status_code not in (302, 303) or "/consent" not in location:
            raise AssertionError(f"no consent page: {response.status_code} {location}")
        decision: dict[str, Any] = {"accept": True, "oauth_query": urlsplit(location).query}
        if self.grant is not None:
            decision["scope"] = self.grant
        consent = await self.http.post("/api/auth/oauth2/consent", json=decision)
        consent.raise_for_status()
        # {"redirect": true, "url": ...}, where the page sends the browser (older versions
        # answered {"redirect_uri": ...})
        answer = consent.json()
        redirect: str = answer.get("url") or answer["redirect_uri"]
        self.consented.append(redirect)
        return redirect

    async def aclose(self) -> None:
        await self.http.aclose()


def redirect_parameters(redirect: str) -> dict[str, Any]:
    return {name: values[0] for name, values in parse_qs(urlsplit(redirect).query).items()}
