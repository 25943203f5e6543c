"""A TCP proxy between the app and PostgreSQL that loses chosen statements or their replies.

It speaks just enough of the wire protocol to find statements: it declines TLS (a client that
asks gets "N", as from a server without TLS); after the startup message, every message is a
type byte and a length. The text of a statement is in its Parse message (extended protocol;
pg8000 here sends Parse/Bind/Describe/Execute/Sync at once, see core/pg_wire.py) or its Query
message (simple protocol). It forwards to TCP or, for `?host=/dir` URLs, to a Unix socket.

    proxy = PgProxy(database_url).start()
    engine_url = proxy.url                      # the same database, through the proxy
    proxy.fail("INSERT INTO chat_tool_calls", when="after")   # next matching statement

- `when="before"`: the statement never reaches the server; the connection is cut.
- `when="after"`: the server runs it (and, in autocommit, commits it); the reply is withheld
  and the connection cut once the server said it is ready for the next query.
- `when="during"`: the statement reaches the server and the client's connection is cut at once,
  while the server may still be running it (it finishes, and commits, on its own).

Each rule fires `times` times (default once), on the next statements whose text contains
`match`, after letting `skip` of them through. `statements` lists every statement's text.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from todo_backend.core.db import parse_database_url

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104


@dataclass
class Rule:
    match: str
    when: str
    times: int
    skip: int = 0
    fired: int = 0
    seen: int = 0


class PgProxy:
    def __init__(self, database_url: str) -> None:
        target = parse_database_url(database_url)
        self._database_url = database_url
        # The embedded server listens on a Unix socket (libpq's `?host=/dir`); others on TCP.
        self._target: tuple[str, int] | str = target.connect_args.get("unix_sock") or (
            target.url.host or "127.0.0.1",
            target.url.port or 5432,
        )
        query = parse_qs(urlsplit(database_url).query)
        self._query = urlencode(
            [(key, value) for key, values in query.items() if key != "host" for value in values]
        )
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._connections: list[tuple[socket.socket, socket.socket]] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.statements: list[str] = []
        self.fired: list[tuple[str, str]] = []

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        """The database URL with the proxy as host (credentials, database and query kept)."""
        parts = urlsplit(self._database_url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, self._query, parts.fragment))

    def start(self) -> PgProxy:
        self._listener.listen(16)
        self._thread = threading.Thread(target=self._accept, name="PgProxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for client, server in connections:
            _close(client, server)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PgProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- rules -----------------------------------------------------------------------------------

    def fail(self, match: str, *, when: str = "after", times: int = 1, skip: int = 0) -> Rule:
        """Lose the next `times` statements containing `match`, after letting `skip` through."""
        if when not in {"before", "during", "after"}:
            raise ValueError("when is 'before', 'during' or 'after'")
        rule = Rule(match=match, when=when, times=times, skip=skip)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def count(self, match: str) -> int:
        """How many statements containing `match` went through (or were lost)."""
        with self._lock:
            return sum(1 for statement in self.statements if match in statement)

    def _rule_for(self, statement: str) -> Rule | None:
        with self._lock:
            self.statements.append(statement)
            for rule in self._rules:
                if rule.fired >= rule.times or rule.match not in statement:
                    continue
                rule.seen += 1
                if rule.seen > rule.skip:
                    rule.fired += 1
                    self.fired.append((rule.match, rule.when))
                    return rule
        return None

    # -- relaying --------------------------------------------------------------------------------

    def _accept(self) -> None:
        self._listener.settimeout(0.1)  # wakes to notice stop(): closing does not interrupt accept
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                if isinstance(self._target, str):
                    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    server.settimeout(5)
                    server.connect(self._target)
                else:
                    server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if server.family != socket.AF_UNIX:
                server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.append((client, server))
            threading.Thread(
                target=self._relay, args=(client, server), name="PgProxyConn", daemon=True
            ).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        from_client = bytearray()
        from_server = bytearray()
        started = False  # the startup message (no type byte) has gone through
        # "after" rule in progress: the server's replies are withheld until ReadyForQuery.
        withholding = False
        # "during" rule in progress: the client is cut once its statement (up to Sync) is sent.
        cutting = False
        client_gone = False
        try:
            while not self._stopping.is_set():
                watched = [server] if client_gone else [client, server]
                readable, _, _ = select.select(watched, [], [], 0.2)
                if client in readable and not client_gone:
                    data = client.recv(65536)
                    if not data:
                        return
                    from_client.extend(data)
                    while True:
                        if not started:
                            if len(from_client) < 8:
                                break
                            length, code = struct.unpack("!ii", from_client[:8])
                            if length == 8 and code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
                                # No encryption through the proxy: "N", then a plain startup.
                                del from_client[:8]
                                client.sendall(b"N")
                                continue
                            if len(from_client) < length:
                                break
                            server.sendall(bytes(from_client[:length]))
                            del from_client[:length]
                            started = True
                            continue
                        if len(from_client) < 5:
                            break
                        kind = from_client[0:1]
                        length = struct.unpack("!i", from_client[1:5])[0]
                        if len(from_client) < 1 + length:
                            break
                        message = bytes(from_client[: 1 + length])
                        del from_client[: 1 + length]
                        statement = _statement_of(kind, message)
                        if statement is not None:
                            rule = self._rule_for(statement)
                            if rule is not None and rule.when == "before":
                                return  # lost on the way: nothing of it reaches the server
                            if rule is not None:
                                withholding = True
                                cutting = rule.when == "during"
                        server.sendall(message)
                        if cutting and kind == b"S":
                            # The server runs it on; the client sees its connection drop now.
                            _close(client)
                            client_gone = True
                            break
                if server in readable:
                    data = server.recv(65536)
                    if not data:
                        return
                    from_server.extend(data)
                    while len(from_server) >= 5:
                        length = struct.unpack("!i", from_server[1:5])[0]
                        if len(from_server) < 1 + length:
                            break
                        message = bytes(from_server[: 1 + length])
                        del from_server[: 1 + length]
                        if withholding:
                            if message[0:1] == b"Z":
                                return  # the server has finished it; the reply is lost
                            continue
                        client.sendall(message)
        except OSError:
            return
        finally:
            _close(client, server)
            with self._lock, contextlib.suppress(ValueError):
                self._connections.remove((client, server))


def _statement_of(kind: bytes, message: bytes) -> str | None:
    body = message[5:]
    if kind == b"P":  # Parse: name \0 query \0 ...
        _, _, rest = body.partition(b"\x00")
        return rest.partition(b"\x00")[0].decode("utf-8", "replace")
    if kind == b"Q":  # Query: query \0
        return body.partition(b"\x00")[0].decode("utf-8", "replace")
    return None


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
