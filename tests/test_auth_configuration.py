"""Authentication configuration (API.md, "Additions" / "Authentication and input"; issue 9 item 5,
issue 10 item 2): BETTER_AUTH_URL alone is enough for a Better Auth front end, weak settings are
refused at cold start naming the variable, blank values count as unset, and `sub` is validated."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from tests.support.jwks_server import JwksServer
from tests.support.tokens import TEST_SECRET, make_token
from todo_backend.core.settings import ConfigurationError, get_settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def listing(api: Any, token: str) -> Any:
    return api.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})


class Signer:
    """An Ed25519 key published in a key set, as Better Auth's JWT plugin does."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = ed25519.Ed25519PrivateKey.generate()

    @property
    def jwk(self) -> dict[str, Any]:
        public = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def token(self, sub: str, **claims: Any) -> str:
        return make_token(
            sub, secret=self.private, algorithm="EdDSA", headers={"kid": self.kid}, **claims
        )


@pytest.fixture
def better_auth(configure: Any) -> Iterator[tuple[str, JwksServer, Signer]]:
    """A Better Auth front end at a local origin; the API configured with BETTER_AUTH_URL only."""
    signer = Signer("key-1")
    with JwksServer() as server:
        server.add_key(signer.jwk)
        parts = urlsplit(server.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        configure(BETTER_AUTH_URL=origin, BETTER_AUTH_SECRET=None)
        yield origin, server, signer


# --- BETTER_AUTH_URL alone ----------------------------------------------------------------------


def test_better_auth_url_alone_verifies_better_auth_tokens(
    tasks_api, user, task_factory, better_auth
):
    # Given only BETTER_AUTH_URL (no secret, no JWKS URL) and a user with a task
    origin, server, signer = better_auth
    task = task_factory(user, "Mine")
    # When the front end sends a token as Better Auth signs it (iss = aud = its base URL)
    response = listing(tasks_api, signer.token(user.id, iss=origin, aud=origin))
    # Then the key set is fetched from <origin>/api/auth/jwks and the token is accepted
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [task.id]
    assert server.requests == 1


def test_better_auth_url_requires_its_issuer_and_audience(tasks_api, user, better_auth):
    origin, _, signer = better_auth
    cases = {
        "both": ({"iss": origin, "aud": origin}, 200),
        "no iss": ({"aud": origin}, 401),
        "no aud": ({"iss": origin}, 401),
        "other issuer": ({"iss": "https://evil.example.test", "aud": origin}, 401),
        "other audience": ({"iss": origin, "aud": "https://other.example.test"}, 401),
        "trailing slash": ({"iss": origin + "/", "aud": origin + "/"}, 401),
    }
    outcomes = {
        case: listing(tasks_api, signer.token(user.id, **claims)).status_code
        for case, (claims, _) in cases.items()
    }
    assert outcomes == {case: status for case, (_, status) in cases.items()}


def test_jwt_issuer_and_audience_override_the_origin(tasks_api, user, better_auth, configure):
    origin, _, signer = better_auth
    configure(JWT_ISSUER="https://auth.example.test", JWT_AUDIENCE="todo-api")
    accepted = signer.token(user.id, iss="https://auth.example.test", aud="todo-api")
    refused = signer.token(user.id, iss=origin, aud=origin)
    assert listing(tasks_api, accepted).status_code == 200
    assert listing(tasks_api, refused).status_code == 401


def test_without_a_secret_hs256_tokens_are_refused(tasks_api, user, better_auth):
    origin, _, _ = better_auth
    # Given BETTER_AUTH_URL without BETTER_AUTH_SECRET
    # When an HS256 token (signed with the test secret) is sent
    response = listing(tasks_api, make_token(user.id, iss=origin, aud=origin))
    # Then it is refused, with the Bearer challenge
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_key_rotated_in_is_used_without_a_restart(tasks_api, user, better_auth):
    origin, server, old = better_auth
    assert listing(tasks_api, old.token(user.id, iss=origin, aud=origin)).status_code == 200
    # When Better Auth rotates: a new key (new kid) is published, later than the refetch cooldown
    new = Signer("key-2")
    server.add_key(new.jwk)
    time.sleep(1.1)
    # Then a token with the new kid is accepted (an unknown kid refetches the set once)
    assert listing(tasks_api, new.token(user.id, iss=origin, aud=origin)).status_code == 200
    assert server.requests == 2


def test_with_secret_and_better_auth_url_both_kinds_work(tasks_api, user, better_auth, configure):
    origin, _, signer = better_auth
    configure(BETTER_AUTH_SECRET=TEST_SECRET)
    assert listing(tasks_api, make_token(user.id, iss=origin, aud=origin)).status_code == 200
    assert listing(tasks_api, signer.token(user.id, iss=origin, aud=origin)).status_code == 200


def test_make_token_signs_what_the_running_configuration_expects(tasks_api, user, configure):
    # Given the API runs with BETTER_AUTH_URL and a shared secret
    origin = "http://localhost:3000"
    configure(BETTER_AUTH_URL=origin, BETTER_AUTH_SECRET=TEST_SECRET)
    # When the development token script mints a token under the same environment
    environment = {**os.environ, "BETTER_AUTH_URL": origin, "BETTER_AUTH_SECRET": TEST_SECRET}
    minted = subprocess.run(
        [sys.executable, "-m", "scripts.dev_token", user.id, "--hours", "1"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Then it carries that origin as iss and aud, and the API accepts it
    claims = jwt.decode(minted, options={"verify_signature": False})
    assert (claims["iss"], claims["aud"], claims["sub"]) == (origin, origin, user.id)
    assert listing(tasks_api, minted).status_code == 200


# --- weak or wrong configuration is refused, naming the variable -------------------------------


def refusal(**variables: str | None) -> str:
    with pytest.raises(ConfigurationError) as failure:
        load_settings()
    return str(failure.value)


@pytest.mark.parametrize(
    "secret",
    ["x", "31-bytes-are-not-enough-for-it!", "é" * 15 + "x"],  # the last: 16 chars, 31 bytes
)
def test_a_short_hs256_secret_is_refused(configure, secret):
    assert len(secret.encode()) < 32
    configure(BETTER_AUTH_SECRET=secret)
    message = refusal()
    assert "BETTER_AUTH_SECRET" in message
    assert "32 bytes" in message
    assert secret not in message


def test_a_32_byte_secret_is_accepted(configure):
    configure(BETTER_AUTH_SECRET="é" * 16)  # 16 characters, 32 bytes
    assert get_settings().better_auth_secret is not None


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("BETTER_AUTH_JWKS_URL", "http://auth.example.com/api/auth/jwks"),
        ("BETTER_AUTH_JWKS_URL", "http://10.0.0.5/api/auth/jwks"),
        ("BETTER_AUTH_URL", "http://app.example.com"),
        ("BETTER_AUTH_URL", "ftp://app.example.com"),
        ("BETTER_AUTH_URL", "https://app.example.com/api/auth"),
        ("BETTER_AUTH_URL", "https://app.example.com?x=1"),
        ("BETTER_AUTH_URL", "app.example.com"),
    ],
)
def test_key_set_urls_must_be_https_origins(configure, variable, url):
    configure(**{variable: url})
    assert variable in refusal()


@pytest.mark.parametrize(
    ("variable", "url", "kept"),
    [
        ("BETTER_AUTH_JWKS_URL", "http://localhost:3000/api/auth/jwks", None),
        ("BETTER_AUTH_JWKS_URL", "http://127.0.0.1:3000/api/auth/jwks", None),
        ("BETTER_AUTH_JWKS_URL", "http://[::1]:3000/api/auth/jwks", None),
        ("BETTER_AUTH_JWKS_URL", "http://host.docker.internal:3000/api/auth/jwks", None),
        ("BETTER_AUTH_URL", "http://localhost:3000/", "http://localhost:3000"),
        ("BETTER_AUTH_URL", "https://app.example.com", "https://app.example.com"),
    ],
)
def test_local_http_and_https_urls_are_accepted(configure, variable, url, kept):
    configure(**{variable: url})
    settings = get_settings()
    if kept is not None:
        assert settings.better_auth_url == kept


def test_no_secret_and_no_key_set_is_refused(configure):
    configure(BETTER_AUTH_SECRET=None)
    message = refusal()
    assert "BETTER_AUTH_SECRET" in message
    assert "BETTER_AUTH_URL" in message


# --- an empty value counts as unset (sam local --env-vars sets "" for undeclared values) ----------


def test_empty_secrets_are_read_from_their_secret_ids(aws, configure):
    # Given the three secrets in AWS, and the variables themselves present but empty
    manager = boto3.client("secretsmanager", region_name="eu-west-1")
    manager.create_secret(Name="todo/db", SecretString="postgresql://u@db.example.com/app")
    manager.create_secret(Name="todo/auth", SecretString="s" * 40)
    boto3.client("ssm", region_name="eu-west-1").put_parameter(
        Name="/todo/cohere", Value="co-key", Type="SecureString"
    )
    configure(
        DATABASE_URL="",
        BETTER_AUTH_SECRET="",
        CO_API_KEY=" ",
        BETTER_AUTH_URL="",
        DATABASE_URL_SECRET_ID="todo/db",
        BETTER_AUTH_SECRET_SECRET_ID="todo/auth",
        CO_API_KEY_SECRET_ID="ssm:/todo/cohere",
    )
    # When the settings are loaded
    settings = load_settings()
    # Then each empty variable took its stored value, and the empty URL is unset
    assert settings.database_url.get_secret_value() == "postgresql://u@db.example.com/app"
    assert settings.better_auth_secret is not None
    assert settings.better_auth_secret.get_secret_value() == "s" * 40
    assert settings.co_api_key is not None
    assert settings.co_api_key.get_secret_value() == "co-key"
    assert settings.better_auth_url is None


@pytest.mark.parametrize("variable", ["DATABASE_URL", "BETTER_AUTH_SECRET"])
def test_an_empty_required_variable_without_secret_id_is_named(configure, variable):
    configure(**{variable: ""})
    assert variable in refusal()


def test_empty_optional_values_take_their_defaults(configure):
    configure(COHERE_MODEL="", CORS_ORIGINS="", DB_POOL_SIZE="", CO_API_KEY="")
    settings = get_settings()
    assert settings.cohere_model == "command-a-03-2025"
    assert settings.cors_origins == []
    assert settings.db_pool_size == 1
    assert settings.co_api_key is None


# --- sub: 1-255 characters without control characters, else 401 -------------------------------


@pytest.mark.parametrize(
    "sub",
    ["", " ", "a\x00b", "tab\there", "del\x7f", "c1\x85", "x" * 256, "x" * 3000, "\ud800"],
    ids=["empty", "blank", "nul", "tab", "del", "c1", "256", "3000", "lone surrogate"],
)
def test_an_invalid_sub_is_401_not_500(tasks_api, sub):
    token = jwt.encode(
        {"sub": sub, "exp": 2**31}, TEST_SECRET, algorithm="HS256", json_encoder=_SurrogateSafe
    )
    for path in ("/api/tasks", "/api/whoever/tasks"):
        listed = tasks_api.get(path, headers={"Authorization": f"Bearer {token}"})
        created = tasks_api.post(
            path, json={"title": "x"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert (listed.status_code, created.status_code) == (401, 401), (path, listed.text)
        assert listed.headers["WWW-Authenticate"] == "Bearer"


def test_a_sub_of_255_characters_with_unicode_is_accepted(tasks_api, user):
    sub = (user.id + "ü" * 255)[:255]
    headers = {"Authorization": f"Bearer {make_token(sub)}"}
    created = tasks_api.post("/api/tasks", json={"title": "Long sub"}, headers=headers)
    assert created.status_code == 201, created.text
    listed = tasks_api.get("/api/tasks", headers=headers)
    assert [item["title"] for item in listed.json()["items"]] == ["Long sub"]


class _SurrogateSafe(json.JSONEncoder):
    """JSON as a client could send it, lone surrogates escaped (`\\ud800`)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["ensure_ascii"] = True
        super().__init__(**kwargs)
