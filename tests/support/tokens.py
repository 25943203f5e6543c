"""Tokens shaped like the ones Better Auth issues."""

import time
import uuid
import warnings
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning

TEST_SECRET = "test-better-auth-secret-with-32-bytes!!"


def make_token(
    sub: str | None = None,
    *,
    secret: str = TEST_SECRET,
    algorithm: str = "HS256",
    expires_in: int = 600,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + expires_in, **claims}
    if sub is not None:
        payload["sub"] = sub
    with warnings.catch_warnings():
        # Tests sign HS512 tokens with the short test secret on purpose (the API refuses HS512);
        # PyJWT would warn that 39 bytes are too few for HS512.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def new_user_id() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"
