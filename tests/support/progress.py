"""Progress lines past pytest's output capture, so that a long test is never silent for long.

`tests/conftest.py` installs the session's config; `say(line)` then prints `    ... line` on the
terminal whether or not the run captures output (from the main thread only: the capture is
suspended while it writes)."""

import time
from collections.abc import Iterator
from typing import Any

import pytest

INTERVAL_SECONDS = 5.0

_config: pytest.Config | None = None


def install(config: pytest.Config) -> None:
    global _config
    _config = config


def say(line: str) -> None:
    if _config is None:
        return
    reporter = _config.pluginmanager.getplugin("terminalreporter")
    capture = _config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"    ... {line}")


def ticking(label: str, items: list[Any], interval: float = INTERVAL_SECONDS) -> Iterator[Any]:
    """The items, saying `label: i/n` whenever `interval` seconds passed since the last line."""
    last = time.monotonic()
    for index, item in enumerate(items):
        if time.monotonic() - last >= interval:
            say(f"{label}: {index}/{len(items)}")
            last = time.monotonic()
        yield item


class Waiting:
    """For a polling loop: `tick()` each round says `label: N s` every `interval` seconds."""

    def __init__(self, label: str, interval: float = INTERVAL_SECONDS) -> None:
        self.label = label
        self.interval = interval
        self.started = self.last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            say(f"{self.label}: {now - self.started:.0f} s")
            self.last = now
