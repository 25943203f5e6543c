"""Helpers of scripts/sam_local.sh:

python -m scripts.sam_local_env container-url URL HOST   URL with a local host replaced by HOST
python -m scripts.sam_local_env create-database URL      create URL's database when missing
python -m scripts.sam_local_env env-file URL             --env-vars JSON from the example file
"""

import json
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from scripts.dev_secret import dev_auth_secret

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "env.local.example.json"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def container_url(url: str, host: str) -> str:
    """The URL a container uses: a loopback host is this machine, reached at `host`."""
    parts = urlsplit(url)
    if parts.hostname not in LOCAL_HOSTS:
        return url
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{host}:{parts.port or 5432}"
    if credentials:
        netloc = f"{credentials}@{netloc}"
    query = parts.query
    if "sslmode=" not in query:
        query = f"{query}&sslmode=disable" if query else "sslmode=disable"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def create_database(url: str) -> None:
    import pg8000.native

    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "postgres"
    admin = pg8000.native.Connection(
        parts.username or "postgres",
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        password=parts.password,
        database="postgres",
    )
    try:
        if not admin.run("SELECT 1 FROM pg_database WHERE datname = :name", name=name):
            admin.run(f"CREATE DATABASE {pg8000.native.identifier(name)}")
    finally:
        admin.close()


def env_file(database_url: str) -> str:
    variables = json.loads(EXAMPLE.read_text())
    variables["Parameters"]["DATABASE_URL"] = database_url
    variables["Parameters"]["BETTER_AUTH_SECRET"] = dev_auth_secret()
    return json.dumps(variables, indent=2) + "\n"


def main(argv: list[str]) -> int:
    match argv:
        case ["container-url", url, host]:
            print(container_url(url, host))
        case ["create-database", url]:
            create_database(url)
        case ["env-file", url]:
            sys.stdout.write(env_file(url))
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
