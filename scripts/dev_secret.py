"""The development BETTER_AUTH_SECRET: $BETTER_AUTH_SECRET, else one generated once and kept."""

import os
import secrets

from scripts.local_paths import DEV_SECRET_FILE


def dev_auth_secret() -> str:
    configured = os.environ.get("BETTER_AUTH_SECRET")
    if configured:
        return configured
    if not DEV_SECRET_FILE.exists():
        DEV_SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
        DEV_SECRET_FILE.write_text(secrets.token_urlsafe(32))
        DEV_SECRET_FILE.chmod(0o600)
    return DEV_SECRET_FILE.read_text().strip()
