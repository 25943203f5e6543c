"""The database: one lazily built engine per container, statements run in autocommit.

Every request is one statement (or a few independent ones), so the engine runs in AUTOCOMMIT:
no BEGIN/COMMIT round trips, and nothing outlives a statement, which is what PgBouncer's
transaction mode (Neon's pooled endpoint) requires. pg8000 only uses unnamed prepared statements.
"""

import select
import ssl
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, RowMapping
from sqlalchemy.exc import DBAPIError, DisconnectionError, InvalidRequestError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql import Executable

from todo_backend.core.settings import ConfigurationError, get_settings

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
# SQLSTATEs after which the server has gone away: admin shutdown, crash, cannot connect now.
DISCONNECT_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


class DatabaseUnavailableError(RuntimeError):
    """The database could not be reached (after one reconnect)."""


class WriteOutcomeUnknownError(DatabaseUnavailableError):
    """The connection broke while a write was running: it may or may not have committed."""


class ConnectionTarget(NamedTuple):
    """What `DATABASE_URL` says, turned into SQLAlchemy's URL and pg8000's connect arguments."""

    url: URL
    connect_args: dict[str, Any]


@cache
def tls_context(root_certificates: str | None = None) -> ssl.SSLContext:
    """The client TLS context, built once per container: loading the CA store costs ~25 ms of
    CPU. With SnapStart it is built before the snapshot (`todo_backend.core.snapstart`)."""
    return ssl.create_default_context(cafile=root_certificates)


def parse_database_url(raw: str) -> ConnectionTarget:
    """Read a libpq-style URL as Neon gives it (`postgres://` or `postgresql://`, sslmode, ...).

    TLS is required (with certificate and host name verification) unless the host is local or a
    Unix socket, or `sslmode=disable` says otherwise.
    """
    parts = urlsplit(raw.strip())
    scheme = parts.scheme.lower()
    if scheme not in {"postgres", "postgresql", "postgresql+pg8000"}:
        raise ConfigurationError(
            "Invalid configuration: DATABASE_URL: expected a postgresql:// or postgres:// URL"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError("Invalid configuration: DATABASE_URL: invalid port") from None

    connect_args: dict[str, Any] = {}
    socket_dir = query.pop("host", None)
    host = parts.hostname
    if socket_dir and socket_dir.startswith("/"):
        # libpq's `?host=/dir` form (used by the embedded development server): a Unix socket.
        connect_args["unix_sock"] = f"{socket_dir.rstrip('/')}/.s.PGSQL.{port or 5432}"
        host = None
    elif socket_dir:
        host = socket_dir
    if not host and "unix_sock" not in connect_args:
        raise ConfigurationError("Invalid configuration: DATABASE_URL: no host")

    ssl_mode = query.pop("sslmode", None)
    if ssl_mode is None:
        ssl_mode = "disable" if host is None or host in LOCAL_HOSTS else "require"
    if ssl_mode not in SSL_MODES:
        raise ConfigurationError(
            f"Invalid configuration: DATABASE_URL: unknown sslmode {ssl_mode!r}"
        )
    root_certificates = query.pop("sslrootcert", None)
    if ssl_mode in {"disable", "allow"}:
        # False, not None: given None, pg8000 still sends SSLRequest (and loads the CA store) on
        # every connect, and uses TLS without verification when the server accepts.
        connect_args["ssl_context"] = False
    else:
        # Stricter than libpq's `require`: the server's certificate is always verified
        # (Neon's are publicly trusted).
        connect_args["ssl_context"] = tls_context(root_certificates)

    # channel_binding: pg8000 negotiates SCRAM itself; the parameter is accepted and not needed.
    query.pop("channel_binding", None)
    if "connect_timeout" in query:
        connect_args["timeout"] = float(query.pop("connect_timeout"))
    else:
        connect_args["timeout"] = 10
    if "application_name" in query:
        connect_args["application_name"] = query.pop("application_name")
    if "options" in query:
        # Neon's `options=endpoint%3D<id>` for clients without SNI; a startup parameter.
        connect_args["startup_params"] = {"options": query.pop("options")}

    url = URL.create(
        "postgresql+pg8000",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        host=host,
        port=port if host else None,
        database=parts.path.lstrip("/") or None,
    )
    return ConnectionTarget(url=url, connect_args=connect_args)


def create_database_engine(raw_url: str, *, pool_size: int = 1, autocommit: bool = True) -> Engine:
    """An engine holding at most `pool_size` connections, never more."""
    target = parse_database_url(raw_url)
    engine = create_engine(
        target.url,
        connect_args=target.connect_args,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=10,
        pool_reset_on_return=None if autocommit else "rollback",
        isolation_level="AUTOCOMMIT" if autocommit else None,
        # Parameters hold task and message text: keep them out of errors and logs.
        hide_parameters=True,
    )
    event.listen(engine, "handle_error", _mark_disconnects)
    event.listen(engine, "do_connect", _pipelined_connection)
    event.listen(engine.pool, "checkout", _closed_by_server)
    return engine


def _pipelined_connection(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
    from todo_backend.core.pg_wire import PipelinedConnection

    # Timestamps come back in UTC whatever the database's or role's TimeZone setting: in another
    # zone, 9999-12-31T23:00Z reads as year 10000, which no Python datetime can hold. A startup
    # parameter, so no extra round trip, and PgBouncer tracks it per client.
    startup_params = {**(cparams.get("startup_params") or {}), "TimeZone": "UTC"}
    return PipelinedConnection(*cargs, **{**cparams, "startup_params": startup_params})


def _mark_disconnects(context: ExceptionContext) -> None:
    """Treat a server-side termination as a disconnect, so the pool drops that connection."""
    original = context.original_exception
    sqlstate = (
        original.args[0].get("C") if original.args and isinstance(original.args[0], dict) else None
    )
    if sqlstate in DISCONNECT_SQLSTATES or isinstance(
        original.__cause__ or original, (ConnectionError, EOFError)
    ):
        context.is_disconnect = True


class Database:
    """Runs units of work on the container's engine.

    A pooled connection that the server closed while it sat idle (Neon suspending its compute,
    PgBouncer's idle timeout, a restart) is noticed at checkout, before anything is sent, and
    replaced. A connection lost in the middle of a statement is retried only for work that is
    safe to run twice (reads): a write may have committed before the connection broke.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run[T](self, work: Callable[[Connection], T], *, idempotent: bool = False) -> T:
        """Run `work` with a pooled connection; the connection goes back to the pool after it."""
        for attempt in (1, 2):
            try:
                connection = self.engine.connect()
            except (DBAPIError, PoolTimeoutError, OSError) as error:
                # Cannot connect (server down, too many clients, pool exhausted): no retry, so an
                # unreachable host costs one connect timeout, not two.
                raise DatabaseUnavailableError(type(error).__name__) from error
            except InvalidRequestError as error:
                # The pool found the connection closed at checkout, reconnected, and found the
                # new one closed too ("This connection is closed"): the server is going away.
                raise DatabaseUnavailableError("connections closed at checkout") from error
            with connection:
                try:
                    return work(connection)
                except DBAPIError as error:
                    if not error.connection_invalidated:
                        raise
                    if not idempotent:
                        raise WriteOutcomeUnknownError("connection lost during a write") from error
                    if attempt == 2:
                        raise DatabaseUnavailableError("connection lost") from error
        raise AssertionError("unreachable")

    def fetch_all(self, statement: Executable, *, idempotent: bool = False) -> Sequence[RowMapping]:
        return self.run(
            lambda connection: connection.execute(statement).mappings().all(),
            idempotent=idempotent,
        )

    def fetch_all_sql(
        self, sql: str, parameters: tuple[Any, ...], *, idempotent: bool = False
    ) -> list[dict[str, Any]]:
        """Rows, as dicts, of a statement compiled beforehand (driver SQL, `%s` placeholders):
        no per-request statement building, compiling or result-type processing."""

        def work(connection: Connection) -> list[dict[str, Any]]:
            result = connection.exec_driver_sql(sql, parameters)
            keys = tuple(result.keys())
            return [dict(zip(keys, row, strict=True)) for row in result.all()]

        return self.run(work, idempotent=idempotent)

    def fetch_one(self, statement: Executable, *, idempotent: bool = False) -> RowMapping | None:
        return self.run(
            lambda connection: connection.execute(statement).mappings().first(),
            idempotent=idempotent,
        )


def _closed_by_server(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """At checkout: an idle connection has nothing to read unless the server closed it (EOF, or
    a FATAL message before closing). Checked without a round trip; the pool then reconnects."""
    sock = getattr(dbapi_connection, "_usock", None)
    if sock is None:
        return
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        readable = [sock]
    if readable:
        raise DisconnectionError("the server closed this connection while it was idle")


@cache
def get_database() -> Database:
    """The container's database: built on first use, one engine (and connection) per container."""
    settings = get_settings()
    engine = create_database_engine(
        settings.database_url.get_secret_value(), pool_size=settings.db_pool_size
    )
    return Database(engine)
