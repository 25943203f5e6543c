"""Mint a development token for a user id: python -m scripts.dev_token alice [--hours 12]."""

import argparse
import sys
import time

import jwt

from scripts.dev_secret import dev_auth_secret
from scripts.local_paths import SHARED_PYTHON


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("user_id", help="the token's sub claim")
    parser.add_argument("--hours", type=float, default=12, help="lifetime (default 12)")
    args = parser.parse_args()
    now = int(time.time())
    claims = {"sub": args.user_id, "iat": now, "exp": now + int(args.hours * 3600)}
    sys.path.insert(0, str(SHARED_PYTHON))
    from todo_backend.core.auth import configured_token_claims

    claims.update(configured_token_claims())  # the iss/aud the API expects, when it expects any
    print(jwt.encode(claims, dev_auth_secret(), algorithm="HS256"))


if __name__ == "__main__":
    main()
