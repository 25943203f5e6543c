"""What the database connection sends first: with `sslmode=disable` (and for local hosts) a plain
StartupMessage, never an SSLRequest; for remote hosts an SSLRequest with one TLS context per
process."""

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from todo_backend.core.db import create_database_engine, parse_database_url

SSL_REQUEST_CODE = 80877103
PROTOCOL_3 = 196608


class FirstMessageRecorder:
    """A TCP listener that records the first 8 bytes a client sends, answers 'N' (no TLS) to an
    SSLRequest, then closes the connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.first: list[tuple[int, int]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection:
            data = b""
            while len(data) < 8:
                chunk = connection.recv(8 - len(data))
                if not chunk:
                    return
                data += chunk
            length, code = struct.unpack("!ii", data)
            self.first.append((length, code))
            if code == SSL_REQUEST_CODE:
                connection.sendall(b"N")

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def recorder() -> Iterator[FirstMessageRecorder]:
    server = FirstMessageRecorder()
    yield server
    server.close()


def first_message(recorder: FirstMessageRecorder, url: str) -> int:
    engine = create_database_engine(url)
    try:
        with pytest.raises(Exception):  # noqa: B017 - the recorder hangs up; only the bytes matter
            engine.connect()
    finally:
        engine.dispose()
    recorder.thread.join(timeout=5)
    assert len(recorder.first) == 1
    return recorder.first[0][1]


def test_sslmode_disable_sends_no_ssl_request(recorder: FirstMessageRecorder):
    url = f"postgresql://u:p@127.0.0.1:{recorder.port}/db?sslmode=disable&connect_timeout=5"
    assert first_message(recorder, url) == PROTOCOL_3


def test_local_host_without_sslmode_sends_no_ssl_request(recorder: FirstMessageRecorder):
    url = f"postgresql://u:p@127.0.0.1:{recorder.port}/db?connect_timeout=5"
    assert first_message(recorder, url) == PROTOCOL_3


def test_sslmode_require_asks_for_tls_and_refuses_a_server_without_it(
    recorder: FirstMessageRecorder,
):
    url = f"postgresql://u:p@127.0.0.1:{recorder.port}/db?sslmode=require&connect_timeout=5"
    assert first_message(recorder, url) == SSL_REQUEST_CODE


def test_the_tls_context_is_built_once_per_process():
    first = parse_database_url("postgresql://u:p@ep-a-pooler.neon.tech/db?sslmode=require")
    second = parse_database_url("postgres://v:q@ep-b-pooler.neon.tech/other")
    context = first.connect_args["ssl_context"]
    assert context is second.connect_args["ssl_context"]
    assert context.check_hostname is True
