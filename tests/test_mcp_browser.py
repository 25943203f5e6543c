"""Official MCP clients against the local app (`make dev`'s, CORS_ORIGINS naming a page's origin):
a real browser, headless Chromium (Debian's `chromium`, driven by playwright-core with that
executable), loads a page from another origin that runs the official MCP TypeScript client, reads
the 401's challenge, lists and calls tools (API.md, third wave, "Browser MCP clients"); and the
MCP Inspector CLI lists the tools, with its schema portability checks (`--strict`).

The npm packages are pinned by tests/browser/package-lock.json and installed, with the browser,
by scripts/bootstrap_tools.sh; without them the test says how to install them and skips."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.tokens import make_token, new_user_id

ROOT = Path(__file__).resolve().parents[1]
BROWSER_DIR = ROOT / "tests" / "browser"
# Debian's chromium; GitHub's runners have Google Chrome, which playwright-core drives the same way.
CHROMIUM = os.environ.get("CHROMIUM") or next(
    (found for name in ("chromium", "google-chrome") if (found := shutil.which(name))),
    "/usr/bin/chromium",
)
INSTALL_HINT = (
    "run scripts/bootstrap_tools.sh (apt-get install chromium; npm ci --prefix tests/browser)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def page_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def api(page_port: int) -> Iterator[str]:
    """The local app as `make dev` serves it, in its own process (CORS is set at start-up)."""
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.skip(f"the browser test's npm packages are not installed; {INSTALL_HINT}")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared" / "python")]),
        "CORS_ORIGINS": f"http://127.0.0.1:{page_port}",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "scripts.local_app:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the local app did not start")
            time.sleep(0.2)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_page_on_another_origin_uses_the_tools_with_the_typescript_client(
    api: str, page_port: int
):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium is not installed; {INSTALL_HINT}")
    # Given a page on http://127.0.0.1:<page port>, an allowed front-end origin, and a user's token
    user = new_user_id()
    result = subprocess.run(
        ["node", "run.mjs"],
        cwd=BROWSER_DIR,
        env={
            **os.environ,
            "MCP_URL": f"{api}/mcp",
            "TOKEN": make_token(user),
            "PAGE_PORT": str(page_port),
            "CHROMIUM": CHROMIUM,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # When it calls /mcp without a token, Then it can read the challenge (WWW-Authenticate exposed)
    assert seen["challenge"]["status"] == 401
    assert seen["challenge"]["challenge"].startswith(
        f'Bearer resource_metadata="{api}/.well-known/oauth-protected-resource/mcp"'
    )
    # And with the token the official client connects (its requests after initialize carry
    # MCP-Protocol-Version, which the preflight allows), lists the tools and calls them
    assert seen["failure"] is None, (seen["failure"], seen["errors"])
    used = seen["used"]
    assert {"add_task", "list_tasks", "delete_task"} <= set(used["tools"])
    assert used["added"]["title"] == "From a browser"
    assert [task["title"] for task in used["listed"]["tasks"]] == ["From a browser"]


def test_the_mcp_inspector_cli_lists_and_calls_the_tools(api: str, tmp_path: Path):
    inspector = BROWSER_DIR / "node_modules" / ".bin" / "mcp-inspector"
    token = make_token(new_user_id())

    def inspect(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(inspector),
                "--cli",
                f"{api}/mcp",
                "--transport",
                "http",
                "--header",
                f"Authorization: Bearer {token}",
                *arguments,
            ],
            # Its catalog and settings go under HOME: a throwaway one.
            env={**os.environ, "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    # When the Inspector lists the tools, with its schema portability checks, and calls one
    listed = inspect("--method", "tools/list", "--strict")
    called = inspect(
        "--method", "tools/call", "--tool-name", "add_task", "--tool-arg", "title=Inspected"
    )
    # Then it finds every tool, no portability error, and the call's structured result
    assert listed.returncode == 0, listed.stderr[-3000:]
    tools = {tool["name"]: tool for tool in json.loads(listed.stdout)["tools"]}
    assert {"add_task", "list_tasks", "complete_task", "update_task", "delete_task"} <= set(tools)
    assert all(tool["title"] and tool["outputSchema"] for tool in tools.values())
    assert called.returncode == 0, called.stderr[-3000:]
    assert json.loads(called.stdout)["structuredContent"]["title"] == "Inspected"
