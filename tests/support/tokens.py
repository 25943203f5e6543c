"""Tokens shaped like the ones Better Auth issues."""

import time
import uuid
from typing import Any

import jwt

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
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def new_user_id() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"
