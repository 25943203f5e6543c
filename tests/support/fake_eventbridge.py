"""A stand-in for the EventBridge endpoint on a loopback port, for tests that need the AWS SDK to
hold a real (keep-alive) socket, which moto's in-process mock never opens (and moto's server
needs Flask, which the lock does not have). It answers the two JSON 1.1 calls the code makes,
`ListEventBuses` and `PutEvents` (every entry accepted), and records what it received."""

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeEventBridge:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.base_url = ""

    def answer(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((target, body))
        if target == "PutEvents":
            entries = [{"EventId": str(uuid.uuid4())} for _ in body.get("Entries", [])]
            return {"FailedEntryCount": 0, "Entries": entries}
        if target == "ListEventBuses":
            return {"EventBuses": [{"Name": "default"}]}
        return {}

    def published(self) -> list[dict[str, Any]]:
        """Every PutEvents entry received, its Detail decoded."""
        return [
            {**entry, "Detail": json.loads(entry["Detail"])}
            for target, body in self.calls
            if target == "PutEvents"
            for entry in body["Entries"]
        ]


@contextmanager
def fake_eventbridge() -> Iterator[FakeEventBridge]:
    fake = FakeEventBridge()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client keeps its socket open

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            target = self.headers.get("x-amz-target", "").rpartition(".")[2]
            payload = json.dumps(fake.answer(target, body)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/x-amz-json-1.1")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
