"""Mint a development token for a user id: python -m scripts.dev_token alice [--hours 12]."""

import argparse
import sys
import time
import unicodedata

import jwt

from scripts.dev_secret import dev_auth_secret
from scripts.local_paths import SHARED_PYTHON


def user_id_problem(user_id: str) -> str | None:
    """Why the API would refuse this `sub` (1-255 characters, no control characters), or None."""
    if not user_id.strip():
        return "no user id given: make token USER=alice"
    if len(user_id) > 255:
        return "a user id is at most 255 characters"
    if any(unicodedata.category(character) == "Cc" for character in user_id):
        return "a user id cannot contain control characters"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("user_id", nargs="?", default="", help="the token's sub claim")
    parser.add_argument("--hours", type=float, default=12, help="lifetime (default 12)")
    args = parser.parse_args(argv)
    problem = user_id_problem(args.user_id)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    now = int(time.time())
    claims = {"sub": args.user_id, "iat": now, "exp": now + int(args.hours * 3600)}
    sys.path.insert(0, str(SHARED_PYTHON))
    from todo_backend.core.auth import configured_token_claims

    claims.update(configured_token_claims())  # the iss/aud the API expects, when it expects any
    print(jwt.encode(claims, dev_auth_secret(), algorithm="HS256"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
