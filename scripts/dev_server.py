"""Local development server: embedded PostgreSQL, migrations, then uvicorn with reload.

Every way out stops the embedded PostgreSQL (scripts/dev_database.py): Ctrl-C, SIGTERM, SIGHUP (a
closed terminal), an exception, and, through the guard process, SIGKILL.
"""

import errno
import os
import signal
import socket
import sys
import time
from types import FrameType

from scripts.dev_secret import dev_auth_secret
from scripts.local_paths import ROOT, SHARED_PYTHON

HOST = "127.0.0.1"


class PortInUseError(RuntimeError):
    pass


def check_port(port: int) -> None:
    """Fail early, naming the port, when something already listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on {HOST} is already in use (another `make dev`?): stop that "
                    f"or choose another port, e.g. `make dev PORT={port + 1}`"
                ) from None
            raise


def parse_port(value: str | None) -> int:
    try:
        port = int(value or "8000")
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise SystemExit(f"error: PORT must be a number from 1 to 65535, not {value!r}")
    return port


def migrate(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    started = time.monotonic()
    print("==> applying migrations", flush=True)
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")
    print(f"    done in {time.monotonic() - started:.1f} s", flush=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _hang_up(signum: int, frame: FrameType | None) -> None:
    # Whatever handles SIGTERM now (ours, or uvicorn's graceful shutdown while it runs) handles
    # SIGHUP too: raising here, inside uvicorn's reloader, would leave its worker running.
    os.kill(os.getpid(), signal.SIGTERM)


def banner(port: int) -> str:
    base = f"http://{HOST}:{port}"
    chat = "on" if os.environ.get("CO_API_KEY") else "off (set CO_API_KEY to enable)"
    return (
        f"\n==> API at {base} (docs: {base}/docs); chat is {chat}\n"
        "    Get a token:  TOKEN=$(make -s token USER=alice)\n"
        f'    Then:         curl -H "Authorization: Bearer $TOKEN" {base}/api/tasks\n'
        "    Stop:         Ctrl-C (stops the embedded PostgreSQL too)\n"
    )


def main() -> int:
    # SIGTERM and SIGHUP end the server like Ctrl-C does: through `finally`.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _hang_up)
    port = parse_port(os.environ.get("PORT"))
    try:
        check_port(port)
    except PortInUseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    from scripts.dev_database import DevDatabase

    database = DevDatabase()
    try:
        database_url = os.environ.get("DATABASE_URL") or database.start()
        migrate(database_url)
        os.environ["DATABASE_URL"] = database_url
        os.environ["BETTER_AUTH_SECRET"] = dev_auth_secret()
        os.environ.setdefault("DB_POOL_SIZE", "4")
        os.environ.setdefault("CORS_ORIGINS", "http://localhost:3000")
        os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "todo-local")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(SHARED_PYTHON)])
        sys.path[:0] = [str(ROOT), str(SHARED_PYTHON)]
        # The port may have been taken while the database started.
        check_port(port)
        print(banner(port), flush=True)
        import uvicorn

        uvicorn.run(
            "scripts.local_app:app",
            host=HOST,
            port=port,
            reload=True,
            reload_dirs=[str(ROOT / "functions"), str(ROOT / "layers"), str(ROOT / "scripts")],
        )
    except PortInUseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        # No signal may interrupt the clean-up itself.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        database.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
