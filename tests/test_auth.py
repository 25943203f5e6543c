"""Authentication of the tasks function (API.md, "Authentication"): HS256 with the shared secret,
optional JWKS (EdDSA, ES256, RS256, PS256), claim checks, and the 401 shape."""

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.support.jwks_server import JwksServer
from tests.support.tokens import TEST_SECRET, make_token
from todo_backend.core.auth import JWKS_REFETCH_COOLDOWN_SECONDS

ISSUER = "https://todo.example.test"
AUDIENCE = "todo-api"


def b64url(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


def list_titles(tasks_api: Any, headers: dict[str, str]) -> Any:
    return tasks_api.get("/api/tasks", headers=headers)


# --- no token, or not a usable one ---------------------------------------------------------------


def test_health_needs_no_token(tasks_api):
    # Given no Authorization header
    # When the health check is called
    response = tasks_api.get("/api/health")
    # Then it answers without asking for a token
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


ROUTES = [
    ("GET", "/api/tasks", None),
    ("POST", "/api/tasks", {"title": "Sneaky"}),
    ("GET", "/api/tasks/{id}", None),
    ("PUT", "/api/tasks/{id}", {"title": "Sneaky"}),
    ("PATCH", "/api/tasks/{id}", {"title": "Sneaky"}),
    ("PATCH", "/api/tasks/{id}/complete", None),
    ("DELETE", "/api/tasks/{id}", None),
]


def test_every_task_route_needs_a_token(tasks_api, user, task_factory):
    # Given an existing task of a user
    task = task_factory(user, "Private")
    # When each route is called without an Authorization header
    responses = {
        (method, path): tasks_api.request(method, path.format(id=task.id), json=body)
        for method, path, body in ROUTES
    }
    # Then each is refused with 401 and a Bearer challenge
    assert {key: r.status_code for key, r in responses.items()} == dict.fromkeys(responses, 401)
    for response in responses.values():
        assert_unauthorized(response)
    # And the task is untouched, and nothing was created
    after = tasks_api.get(f"/api/tasks/{task.id}", headers=user.headers)
    assert after.status_code == 200
    assert after.json() == json.loads(task.model_dump_json())
    assert tasks_api.get("/api/tasks", headers=user.headers).json()["total"] == 1


def _hand_made_none_token(sub: str) -> str:
    now = int(time.time())
    return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url({'sub': sub, 'exp': now + 600})}."


def _in(seconds: int) -> int:
    return int(time.time()) + seconds


def _hs256(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


BAD_AUTHORIZATION = {
    "wrong scheme": lambda sub: f"Basic {base64.b64encode(b'user:pass').decode()}",
    "token without scheme": lambda sub: make_token(sub),
    "bearer without token": lambda sub: "Bearer",
    "not a jwt": lambda sub: "Bearer not-a-jwt",
    "three garbage segments": lambda sub: "Bearer abc.def.ghi",
    "wrong secret": lambda sub: (
        f"Bearer {make_token(sub, secret='another-secret-of-32-bytes!!!!!!')}"
    ),
    "expired": lambda sub: f"Bearer {make_token(sub, expires_in=-3600)}",
    "alg none": lambda sub: f"Bearer {_hand_made_none_token(sub)}",
    "alg HS512 (not allowed)": lambda sub: f"Bearer {make_token(sub, algorithm='HS512')}",
    "no sub": lambda sub: f"Bearer {make_token(None)}",
    "empty sub": lambda sub: f"Bearer {make_token('')}",
    "sub not a string": lambda sub: f"Bearer {_hs256({'sub': 12345, 'exp': _in(600)})}",
    "no exp": lambda sub: f"Bearer {_hs256({'sub': sub})}",
    "nbf in the future": lambda sub: f"Bearer {make_token(sub, nbf=_in(3600))}",
    "iat in the future": lambda sub: f"Bearer {make_token(sub, iat=_in(3600))}",
    "signature stripped": lambda sub: f"Bearer {make_token(sub).rsplit('.', 1)[0]}.",
}


def test_bad_tokens_get_401_with_bearer_challenge(tasks_api, user, task_factory):
    # Given a user with a task, and Authorization headers that are each wrong in one way
    task_factory(user, "Mine")
    # When the task list is requested with each of them
    responses = {
        case: tasks_api.get("/api/tasks", headers={"Authorization": make_header(user.id)})
        for case, make_header in BAD_AUTHORIZATION.items()
    }
    # Then every one is refused with 401 and a Bearer challenge
    outcomes = {
        case: (r.status_code, r.headers.get("WWW-Authenticate")) for case, r in responses.items()
    }
    assert outcomes == dict.fromkeys(BAD_AUTHORIZATION, (401, "Bearer"))
    for response in responses.values():
        assert_unauthorized(response)
    # While the same user's good token works
    assert list_titles(tasks_api, user.headers).json()["total"] == 1


def test_tampered_payload_is_refused(tasks_api, user, other_user, task_factory):
    # Given a valid token of one user whose payload is swapped for another user's
    task_factory(other_user, "Victim's task")
    header, _, signature = user.token.split(".")
    forged_payload = b64url({"sub": other_user.id, "exp": int(time.time()) + 600})
    # When it is used
    response = list_titles(tasks_api, bearer(f"{header}.{forged_payload}.{signature}"))
    # Then the signature no longer matches and the request is refused
    assert_unauthorized(response)


def test_valid_token_is_accepted_and_small_clock_skew_tolerated(tasks_api, user, task_factory):
    # Given a valid token whose nbf is a few seconds ahead (clock skew)
    task_factory(user, "Mine")
    token = make_token(user.id, nbf=int(time.time()) + 5)
    # When it is used
    response = list_titles(tasks_api, bearer(token))
    # Then it is accepted
    assert response.status_code == 200
    assert response.json()["total"] == 1


def test_scheme_is_case_insensitive(tasks_api, user, task_factory):
    # Given a task and a header using the lower-case scheme name
    task_factory(user, "Mine")
    # When the list is requested
    response = tasks_api.get("/api/tasks", headers={"Authorization": f"bearer {user.token}"})
    # Then the token is accepted (RFC 7235 schemes are case-insensitive)
    assert response.status_code == 200
    assert response.json()["total"] == 1


def test_identity_is_the_sub_claim_only(tasks_api, user, other_user, task_factory):
    # Given two users with one task each
    mine = task_factory(user, "Mine")
    task_factory(other_user, "Theirs")
    # And a token of the first user that carries other claims naming the second
    token = make_token(
        user.id, id=other_user.id, user_id=other_user.id, userId=other_user.id, uid=other_user.id
    )
    # When the list is requested with it
    response = list_titles(tasks_api, bearer(token))
    # Then only the sub's tasks are visible
    assert response.status_code == 200
    assert [item["id"] for item in response.json()["items"]] == [mine.id]


# --- issuer and audience -------------------------------------------------------------------------


@pytest.fixture
def issuer_and_audience(configure) -> None:
    configure(JWT_ISSUER=ISSUER, JWT_AUDIENCE=AUDIENCE)


def test_issuer_and_audience_must_match_when_configured(
    tasks_api, user, task_factory, issuer_and_audience
):
    # Given JWT_ISSUER and JWT_AUDIENCE are set, and a user with a task
    task_factory(user, "Mine")
    cases = {
        "right": ({"iss": ISSUER, "aud": AUDIENCE}, 200),
        "audience list": ({"iss": ISSUER, "aud": [AUDIENCE, "other"]}, 200),
        "wrong issuer": ({"iss": "https://evil.example.test", "aud": AUDIENCE}, 401),
        "wrong audience": ({"iss": ISSUER, "aud": "another-api"}, 401),
        "no iss": ({"aud": AUDIENCE}, 401),
        "no aud": ({"iss": ISSUER}, 401),
    }
    # When tokens with these iss/aud claims are used
    responses = {
        case: list_titles(tasks_api, bearer(make_token(user.id, **claims)))
        for case, (claims, _) in cases.items()
    }
    # Then only the matching ones are accepted
    assert {case: r.status_code for case, r in responses.items()} == {
        case: status for case, (_, status) in cases.items()
    }
    for case, response in responses.items():
        if cases[case][1] == 200:
            assert response.json()["total"] == 1
        else:
            assert_unauthorized(response)


def test_issuer_and_audience_are_not_required_when_not_configured(tasks_api, user, task_factory):
    # Given no JWT_ISSUER/JWT_AUDIENCE (the session default) and a user with a task
    task_factory(user, "Mine")
    # When a token carries arbitrary iss/aud claims
    token = make_token(user.id, iss="https://anyone.example.test", aud="anything")
    response = list_titles(tasks_api, bearer(token))
    # Then it is accepted
    assert response.status_code == 200
    assert response.json()["total"] == 1


# --- JWKS ----------------------------------------------------------------------------------------


def _jwk(algorithm_class: Any, public_key: Any, kid: str, alg: str) -> dict[str, Any]:
    jwk = algorithm_class.to_jwk(public_key, as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, Any]:
    """Private keys by kid, and the JWKs of their public halves."""
    ed = ed25519.Ed25519PrivateKey.generate()
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    es = ec.generate_private_key(ec.SECP256R1())
    return {
        "private": {"ed-1": ed, "rs-1": rs, "ps-1": rs, "es-1": es},
        "jwks": [
            _jwk(OKPAlgorithm, ed.public_key(), "ed-1", "EdDSA"),
            _jwk(RSAAlgorithm, rs.public_key(), "rs-1", "RS256"),
            _jwk(RSAAlgorithm, rs.public_key(), "ps-1", "PS256"),
            _jwk(ECAlgorithm, es.public_key(), "es-1", "ES256"),
        ],
    }


@pytest.fixture
def jwks_server(signing_keys) -> Iterator[JwksServer]:
    with JwksServer() as server:
        for jwk in signing_keys["jwks"]:
            server.add_key(jwk)
        yield server


@pytest.fixture
def with_jwks(configure, jwks_server) -> JwksServer:
    configure(BETTER_AUTH_JWKS_URL=jwks_server.url)
    return jwks_server


def signed(sub: str, key: Any, algorithm: str, kid: str, **claims: Any) -> str:
    return make_token(sub, secret=key, algorithm=algorithm, headers={"kid": kid}, **claims)


@pytest.mark.parametrize(
    ("kid", "algorithm"),
    [("ed-1", "EdDSA"), ("rs-1", "RS256"), ("es-1", "ES256"), ("ps-1", "PS256")],
)
def test_jwks_tokens_are_accepted(
    tasks_api, user, task_factory, signing_keys, with_jwks, kid, algorithm
):
    # Given BETTER_AUTH_JWKS_URL points at a key set, and a user with a task
    task = task_factory(user, "Mine")
    token = signed(user.id, signing_keys["private"][kid], algorithm, kid)
    # When a token signed with one of the set's keys is used
    response = list_titles(tasks_api, bearer(token))
    # Then it is verified against the set and the user's tasks are listed
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [task.id]
    assert with_jwks.requests == 1


def test_jwks_key_set_is_cached(tasks_api, user, signing_keys, with_jwks):
    # Given JWKS is configured and nothing was fetched yet
    assert with_jwks.requests == 0
    private = signing_keys["private"]
    # When several tokens with known kids are verified
    responses = [
        list_titles(tasks_api, bearer(signed(user.id, private["ed-1"], "EdDSA", "ed-1"))),
        list_titles(tasks_api, bearer(signed(user.id, private["ed-1"], "EdDSA", "ed-1"))),
        list_titles(tasks_api, bearer(signed(user.id, private["rs-1"], "RS256", "rs-1"))),
    ]
    # Then all succeed and the key set was fetched only once
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert with_jwks.requests == 1


def test_jwks_unknown_kid_is_refused(tasks_api, user, signing_keys, with_jwks):
    # Given JWKS is configured and the set was already fetched once
    private = signing_keys["private"]
    first = list_titles(tasks_api, bearer(signed(user.id, private["ed-1"], "EdDSA", "ed-1")))
    assert first.status_code == 200
    # When a token signed by a key outside the set, with an unknown kid, is used
    stranger = ed25519.Ed25519PrivateKey.generate()
    response = list_titles(tasks_api, bearer(signed(user.id, stranger, "EdDSA", "not-in-set")))
    # Then it is refused, after at most one refetch of the set
    assert_unauthorized(response)
    assert with_jwks.requests <= 2


def test_jwks_known_kid_but_other_key_is_refused(tasks_api, user, with_jwks):
    # Given JWKS is configured
    # When a token claims a known kid but is signed by another key
    impostor = ed25519.Ed25519PrivateKey.generate()
    response = list_titles(tasks_api, bearer(signed(user.id, impostor, "EdDSA", "ed-1")))
    # Then the signature check fails
    assert_unauthorized(response)


def test_jwks_algorithm_must_match_the_key(tasks_api, user, signing_keys, with_jwks):
    # Given JWKS is configured with an EdDSA key "ed-1"
    # When an RS256 token (signed by the set's RSA key) claims kid "ed-1"
    token = signed(user.id, signing_keys["private"]["rs-1"], "RS256", "ed-1")
    response = list_titles(tasks_api, bearer(token))
    # Then it is refused
    assert_unauthorized(response)


def test_jwks_picks_up_a_key_added_after_the_first_fetch(
    tasks_api, user, task_factory, signing_keys, with_jwks
):
    # Given JWKS is configured and the set was fetched once
    task = task_factory(user, "Mine")
    private = signing_keys["private"]
    warm = list_titles(tasks_api, bearer(signed(user.id, private["ed-1"], "EdDSA", "ed-1")))
    assert warm.status_code == 200
    assert with_jwks.requests == 1
    # When the issuer rotates in a new key and signs a token with it (a moment later: refetches
    # are at most one per JWKS_REFETCH_COOLDOWN_SECONDS, so forged kids cannot force one each)
    rotated = ed25519.Ed25519PrivateKey.generate()
    with_jwks.add_key(_jwk(OKPAlgorithm, rotated.public_key(), "ed-2", "EdDSA"))
    time.sleep(JWKS_REFETCH_COOLDOWN_SECONDS + 0.1)
    response = list_titles(tasks_api, bearer(signed(user.id, rotated, "EdDSA", "ed-2")))
    # Then the unknown kid makes the verifier refetch the set once, and the token is accepted
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [task.id]
    assert with_jwks.requests == 2


def test_forged_kids_cannot_make_every_request_fetch_the_key_set(
    tasks_api, user, signing_keys, with_jwks
):
    # Given JWKS is configured and the set was just fetched
    private = signing_keys["private"]
    warm = list_titles(tasks_api, bearer(signed(user.id, private["ed-1"], "EdDSA", "ed-1")))
    assert warm.status_code == 200
    # When several tokens arrive at once with kids that are not in the set
    forger = ed25519.Ed25519PrivateKey.generate()
    statuses = [
        list_titles(tasks_api, bearer(signed(user.id, forger, "EdDSA", f"forged-{n}"))).status_code
        for n in range(5)
    ]
    # Then each is refused, and the key set was not fetched again for each of them
    assert statuses == [401] * 5
    assert with_jwks.requests <= 2


def test_jwks_does_not_disable_hs256(tasks_api, user, task_factory, with_jwks):
    # Given JWKS is configured and a user with a task
    task = task_factory(user, "Mine")
    # When a token signed with BETTER_AUTH_SECRET (HS256) is used
    response = list_titles(tasks_api, user.headers)
    # Then it still works
    assert response.status_code == 200
    assert [item["id"] for item in response.json()["items"]] == [task.id]


def test_jwks_claims_are_still_checked(tasks_api, user, signing_keys, with_jwks):
    # Given JWKS is configured
    private = signing_keys["private"]["ed-1"]
    # When a correctly signed EdDSA token is expired, or has no sub
    expired = signed(user.id, private, "EdDSA", "ed-1", expires_in=-3600)
    anonymous = make_token(None, secret=private, algorithm="EdDSA", headers={"kid": "ed-1"})
    # Then both are refused
    assert_unauthorized(list_titles(tasks_api, bearer(expired)))
    assert_unauthorized(list_titles(tasks_api, bearer(anonymous)))


def test_asymmetric_tokens_are_refused_without_jwks(tasks_api, user, signing_keys, jwks_server):
    # Given BETTER_AUTH_JWKS_URL is not set (a server with the keys exists, but is not configured)
    token = signed(user.id, signing_keys["private"]["ed-1"], "EdDSA", "ed-1")
    # When an EdDSA token is used
    response = list_titles(tasks_api, bearer(token))
    # Then it is refused and no key set was fetched
    assert_unauthorized(response)
    assert jwks_server.requests == 0
