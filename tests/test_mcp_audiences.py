"""Audiences, OAuth access tokens and scopes (API.md, third wave, "MCP for real clients"), and
keys that leave the key set ("Key sets").

Tokens are shaped as Better Auth issues them: session JWTs from the JWT plugin (`iss` = `aud` =
BETTER_AUTH_URL) and access tokens from the OAuth provider plugin (EdDSA, same key set, `iss` =
`<BETTER_AUTH_URL>/api/auth`, `aud` = the requested resource, a `scope` claim), signed by a key
served from a local JWKS endpoint at `<BETTER_AUTH_URL>/api/auth/jwks`."""

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from tests.support.jwks_server import JwksServer
from tests.support.lambda_events import LambdaClient
from tests.support.mcp_clients import LAMBDA_BASE_URL
from tests.support.tokens import make_token, new_user_id
from todo_backend.core.auth import (
    JWKS_REFETCH_COOLDOWN_SECONDS,
    SESSION_ROUTES,
    RouteAudience,
    TokenVerifier,
)
from todo_backend.core.errors import AuthenticationError

RESOURCE = f"{LAMBDA_BASE_URL}/mcp"
MCP_HEADERS = {
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2025-11-25",
}


class BetterAuth:
    """The key set and the two kinds of token of a Better Auth server at `origin`."""

    def __init__(self, server: JwksServer) -> None:
        self.server = server
        self.origin = server.url.removesuffix("/api/auth/jwks")
        self.issuer = f"{self.origin}/api/auth"
        self.kid = "key-1"
        self.key = ed25519.Ed25519PrivateKey.generate()
        server.add_key(self.jwk(self.key, self.kid))

    @staticmethod
    def jwk(key: ed25519.Ed25519PrivateKey, kid: str) -> dict[str, Any]:
        public = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return {**public, "kid": kid, "alg": "EdDSA"}

    def sign(self, sub: str, **claims: Any) -> str:
        return make_token(
            sub, secret=self.key, algorithm="EdDSA", headers={"kid": self.kid}, **claims
        )

    def session_token(self, sub: str, **claims: Any) -> str:
        return self.sign(sub, **{"iss": self.origin, "aud": self.origin, **claims})

    def access_token(
        self, sub: str, scope: str | None = "tasks:read tasks:write", **claims: Any
    ) -> str:
        """An OAuth access token for the MCP resource, as the OAuth provider plugin issues it."""
        base: dict[str, Any] = {"iss": self.issuer, "aud": RESOURCE, "azp": "mcp-client"}
        if scope is not None:
            base["scope"] = scope
        return self.sign(sub, **{**base, **claims})

    def rotate(self) -> None:
        """A new signing key, and the old one deleted from the served set."""
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.kid = f"key-{int(self.kid.rsplit('-', 1)[1]) + 1}"
        self.server.keys[:] = [self.jwk(self.key, self.kid)]


@pytest.fixture
def better_auth(configure) -> Iterator[BetterAuth]:
    with JwksServer() as server:
        issuer = BetterAuth(server)
        configure(BETTER_AUTH_URL=issuer.origin)
        yield issuer


def mcp_client() -> LambdaClient:
    import functions.mcp.app as module

    return LambdaClient(module.handler)


def rpc(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    return body


def mcp_status(token: str) -> int:
    response = mcp_client().post(
        "/mcp", json=rpc("tools/list"), headers={**MCP_HEADERS, "authorization": f"Bearer {token}"}
    )
    return response.status_code


def call_tool(token: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    response = mcp_client().post(
        "/mcp",
        json=rpc("tools/call", {"name": name, "arguments": arguments}),
        headers={**MCP_HEADERS, "authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["result"]  # type: ignore[no-any-return]


def rest_status(tasks_api: Any, token: str) -> int:
    return tasks_api.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code


# --- audiences ---------------------------------------------------------------------------------


def test_mcp_accepts_session_tokens_and_access_tokens_for_itself_only(better_auth: BetterAuth):
    user = new_user_id()
    cases = {
        "session token": (better_auth.session_token(user), 200),
        "access token for /mcp": (better_auth.access_token(user), 200),
        "aud a list with /mcp (openid asked too)": (
            better_auth.access_token(user, aud=[RESOURCE, f"{better_auth.issuer}/oauth2/userinfo"]),
            200,
        ),
        "another API's /mcp": (
            better_auth.access_token(user, aud="https://other.example/mcp"),
            401,
        ),
        "another resource": (better_auth.access_token(user, aud="https://other.example/api"), 401),
        "/mcp with the session issuer": (
            better_auth.access_token(user, iss=better_auth.origin),
            401,
        ),
        "/mcp with a foreign issuer": (
            better_auth.access_token(user, iss="https://evil.example/api/auth"),
            401,
        ),
        "expired access token": (better_auth.access_token(user, expires_in=-3600), 401),
        "no aud": (better_auth.sign(user, iss=better_auth.origin), 401),
    }
    # When each token calls /mcp
    outcomes = {label: mcp_status(token) for label, (token, _) in cases.items()}
    # Then only session tokens and access tokens for this resource are accepted
    assert outcomes == {label: status for label, (_, status) in cases.items()}


@pytest.mark.parametrize("configured", ["BETTER_AUTH_URL", "JWKS only", "JWKS + JWT_AUDIENCE"])
def test_rest_and_chat_refuse_tokens_issued_for_mcp(
    configure, better_auth: BetterAuth, tasks_api, chat_api, configured: str
):
    # Given a session audience from BETTER_AUTH_URL, none at all, or JWT_AUDIENCE
    if configured != "BETTER_AUTH_URL":
        configure(BETTER_AUTH_URL="", BETTER_AUTH_JWKS_URL=better_auth.server.url)
    if configured == "JWKS + JWT_AUDIENCE":
        configure(JWT_AUDIENCE="todo-api")
    user = new_user_id()
    session_claims = {"aud": "todo-api"} if configured == "JWKS + JWT_AUDIENCE" else {}
    session = better_auth.session_token(user, **session_claims)
    for_mcp = better_auth.access_token(user)
    for_mcp_in_a_list = better_auth.access_token(user, aud=["todo-api", RESOURCE])
    # When each is used at a REST route and a chat route
    conversations = f"/api/{user}/conversations"
    statuses = {
        label: (
            rest_status(tasks_api, token),
            chat_api.get(conversations, headers={"Authorization": f"Bearer {token}"}).status_code,
        )
        for label, token in (
            ("session", session),
            ("for /mcp", for_mcp),
            ("for /mcp in a list", for_mcp_in_a_list),
        )
    }
    # Then the session token works and a token for /mcp is refused by both, whatever is configured
    assert statuses == {
        "session": (200, 200),
        "for /mcp": (401, 401),
        "for /mcp in a list": (401, 401),
    }


def test_a_cached_token_never_crosses_to_a_route_that_refuses_it(
    better_auth: BetterAuth, tasks_api
):
    user = new_user_id()
    token = better_auth.access_token(user)
    # Given an access token for /mcp, accepted (and remembered) there, twice
    assert [mcp_status(token), mcp_status(token)] == [200, 200]
    # When the same token is then sent to the REST routes, twice
    # Then it is refused both times: the memory of /mcp's verdict does not apply there
    assert [rest_status(tasks_api, token), rest_status(tasks_api, token)] == [401, 401]
    # And a token for another API's /mcp, refused at REST, is refused at this /mcp too
    other = better_auth.access_token(user, aud="https://other.example/mcp")
    assert rest_status(tasks_api, other) == 401
    assert mcp_status(other) == 401


def test_the_verifier_remembers_each_verdict_per_route_audience():
    verifier = TokenVerifier(
        secret="test-better-auth-secret-with-32-bytes!!",
        jwks=None,
        issuer=None,
        audience=None,
        oauth_issuer="https://front.example/api/auth",
    )
    token = make_token("alice", iss="https://front.example/api/auth", aud=RESOURCE)
    mcp = RouteAudience(mcp_resource=RESOURCE)
    assert verifier.authorize(token, mcp).subject == "alice"
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            verifier.verify(token, SESSION_ROUTES)
    with pytest.raises(AuthenticationError):
        verifier.verify(token, RouteAudience(mcp_resource="https://other.example/mcp"))
    assert list(verifier.verified) == [(mcp, token)]


# --- scopes ---------------------------------------------------------------------------------------


def test_a_read_only_token_reads_and_changes_nothing(better_auth: BetterAuth):
    user = new_user_id()
    writer = better_auth.session_token(user)  # no scope claim: may do everything
    reader = better_auth.access_token(user, scope="tasks:read")
    task_id = call_tool(writer, "add_task", {"title": "Keep me"})["structuredContent"]["task_id"]
    # When the read-only token lists, counts, then tries every changing tool
    listed = call_tool(reader, "list_tasks", {})
    stats = call_tool(reader, "get_stats", {})
    attempts = {
        name: call_tool(reader, name, arguments)
        for name, arguments in (
            ("add_task", {"title": "Sneaked in"}),
            ("complete_task", {"task_id": task_id}),
            ("update_task", {"task_id": task_id, "title": "Changed"}),
            ("delete_task", {"task_id": task_id}),
        )
    }
    # Then it reads, and each change is a tool error naming tasks:write
    assert listed["isError"] is False and listed["structuredContent"]["total"] == 1
    assert stats["isError"] is False and stats["structuredContent"]["total"] == 1
    for name, result in attempts.items():
        assert result["isError"] is True, name
        assert "tasks:write" in result["content"][0]["text"], name
        assert "structuredContent" not in result, name
    # And nothing changed
    (task,) = call_tool(writer, "list_tasks", {})["structuredContent"]["tasks"]
    assert (task["task_id"], task["title"], task["completed"]) == (task_id, "Keep me", False)


def test_scopes_grant_what_they_name(better_auth: BetterAuth):
    user = new_user_id()
    write_only = better_auth.access_token(user, scope="tasks:write")
    both = better_auth.access_token(user, scope="tasks:read tasks:write")
    no_scope_claim = better_auth.access_token(user, scope=None)
    # A write-only token changes but cannot read; both scopes, or no scope claim, do everything
    assert call_tool(write_only, "add_task", {"title": "a"})["isError"] is False
    refused = call_tool(write_only, "list_tasks", {})
    assert refused["isError"] is True and "tasks:read" in refused["content"][0]["text"]
    for token in (both, no_scope_claim):
        assert call_tool(token, "add_task", {"title": "b"})["isError"] is False
        assert call_tool(token, "list_tasks", {})["structuredContent"]["total"] >= 2


# --- keys that leave the key set ------------------------------------------------------------------


def test_a_token_of_a_removed_key_is_refused_once_the_set_is_refetched(
    better_auth: BetterAuth, tasks_api
):
    user = new_user_id()
    old_session, old_access = better_auth.session_token(user), better_auth.access_token(user)
    # Given tokens signed with the current key, accepted (and remembered) at REST and at /mcp
    assert rest_status(tasks_api, old_session) == 200
    assert mcp_status(old_access) == 200
    # When Better Auth rotates its key and deletes the old one, and a token of the new key makes
    # the API refetch the set (a moment later: refetches are at most one per cooldown)
    better_auth.rotate()
    time.sleep(JWKS_REFETCH_COOLDOWN_SECONDS + 0.1)
    assert rest_status(tasks_api, better_auth.session_token(user)) == 200
    # Then the old key's tokens are refused, however recently they were accepted
    assert rest_status(tasks_api, old_session) == 401
    assert mcp_status(old_access) == 401
    assert mcp_status(better_auth.access_token(user)) == 200


def test_a_removed_key_stops_working_when_the_set_expires_and_is_refetched(
    better_auth: BetterAuth,
):
    # Given a verifier whose key set is kept for a short time, and a token it accepted
    verifier = TokenVerifier(
        secret=None,
        jwks=jwt.PyJWKClient(better_auth.server.url, lifespan=0.3, cooldown_duration=0),
        issuer=better_auth.origin,
        audience=better_auth.origin,
    )
    token = better_auth.session_token("alice")
    assert verifier.verify(token) == "alice"
    assert verifier.verify(token) == "alice"
    assert better_auth.server.requests == 1
    # When the key is deleted from the set and the set's lifespan passes (no new token arrives)
    better_auth.rotate()
    time.sleep(0.4)
    # Then the remembered token is checked against the refetched set, and refused
    with pytest.raises(AuthenticationError):
        verifier.verify(token)
    assert better_auth.server.requests >= 2


def test_tokens_keep_working_while_the_set_holds_their_key(better_auth: BetterAuth, tasks_api):
    # Given a key set refetched for a new key added beside the old one (a rotation's first step)
    user = new_user_id()
    old = better_auth.session_token(user)
    assert rest_status(tasks_api, old) == 200
    newer = ed25519.Ed25519PrivateKey.generate()
    better_auth.server.add_key(better_auth.jwk(newer, "key-new"))
    time.sleep(JWKS_REFETCH_COOLDOWN_SECONDS + 0.1)
    token = make_token(
        user,
        secret=newer,
        algorithm="EdDSA",
        headers={"kid": "key-new"},
        iss=better_auth.origin,
        aud=better_auth.origin,
    )
    assert rest_status(tasks_api, token) == 200
    # Then the old key's token is still accepted
    assert rest_status(tasks_api, old) == 200
    assert json.dumps(better_auth.server.keys).count('"kid"') == 2
