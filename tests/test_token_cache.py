"""Verified tokens are remembered until they expire, never longer, and failures never are."""

import time

import pytest

from tests.support.tokens import TEST_SECRET, make_token
from todo_backend.core.auth import LEEWAY_SECONDS, SESSION_ROUTES, TokenVerifier
from todo_backend.core.errors import AuthenticationError


def verifier() -> TokenVerifier:
    return TokenVerifier(secret=TEST_SECRET, jwks=None, issuer=None, audience=None)


def test_a_verified_token_is_answered_from_memory_until_it_expires():
    # Given a token that expires (leeway included) one second from now
    checker = verifier()
    token = make_token("alice", expires_in=1 - LEEWAY_SECONDS)
    # When it is verified twice
    assert checker.verify(token) == "alice"
    assert checker.verify(token) == "alice"
    # Then it was remembered once
    assert list(checker.verified) == [(SESSION_ROUTES, token)]
    # and once expired it is refused, from memory or not
    time.sleep(1.2)
    with pytest.raises(AuthenticationError, match="expired"):
        checker.verify(token)
    assert (SESSION_ROUTES, token) not in checker.verified


def test_a_token_that_fails_is_not_remembered():
    checker = verifier()
    forged = make_token("alice", secret="another-secret-with-enough-bytes!!")
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            checker.verify(forged)
    assert checker.verified == {}


def test_a_token_not_yet_valid_is_not_answered_from_memory():
    checker = verifier()
    later = int(time.time()) + 3600
    token = make_token("alice", expires_in=7200, nbf=later)
    with pytest.raises(AuthenticationError):
        checker.verify(token)
    assert checker.verified == {}
