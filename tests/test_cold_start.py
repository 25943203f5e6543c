"""What a cold start does: imports only what the function needs, and no I/O."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import gc, json, sys
from dataclasses import is_dataclass
import {module} as function
from tests.support.lambda_events import LambdaContext, http_api_event
response = function.handler(http_api_event("GET", "/api/health"), LambdaContext())
print(json.dumps({{
    "status": response["statusCode"],
    "gc_enabled": gc.isenabled(),
    "gc_frozen": gc.get_freeze_count(),
    "loaded": sorted(name for name in ("cohere", "boto3", "botocore.session", "httpx", "alembic",
                                       "sqlmodel", "sqlalchemy.orm")
                     if name in sys.modules),
    "dataclasses": sorted(
        f"{{name}}.{{value.__name__}}"
        for name, module in list(sys.modules.items())
        if name.startswith(("todo_backend", "functions"))
        for value in vars(module).values()
        if isinstance(value, type) and value.__module__ == name and is_dataclass(value)
    ),
}}))
"""


def run_probe(module: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared" / "python")]),
        # Nothing listens here: any connection attempt at import time would fail the probe.
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nowhere",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tasks_function_imports_neither_cohere_nor_aws_sdk():
    # Given a fresh interpreter, When the tasks function starts and answers a health check
    probe = run_probe("functions.tasks.app")
    # Then it answered without touching the database, and loaded no chat or AWS SDK code
    # (Powertools imports only the botocore package itself, for its user agent), nor SQLModel and
    # SQLAlchemy's ORM (the task tables are Core tables)
    assert probe["status"] == 200
    assert probe["loaded"] == []
    # And the collector, off while the module imported, is on again with what it built frozen
    assert probe["gc_enabled"]
    assert probe["gc_frozen"] > 100_000


@pytest.mark.parametrize("module", ["functions.chat.app"])
def test_chat_function_defers_the_cohere_sdk_to_the_first_turn(module):
    probe = run_probe(module)
    assert "cohere" not in probe["loaded"]
    assert "boto3" not in probe["loaded"]
    # Its statements are SQL text and its responses plain pydantic: the SQLModel tables
    # (chat/tables.py, for migrations) and SQLAlchemy's ORM stay out of its cold start
    assert "sqlmodel" not in probe["loaded"]
    assert "sqlalchemy.orm" not in probe["loaded"]


@pytest.mark.parametrize("module", ["functions.tasks.app", "functions.chat.app"])
def test_no_dataclass_is_created_by_a_cold_start(module):
    # Given a fresh interpreter, When the function starts and answers a health check
    probe = run_probe(module)
    # Then none of our classes it loaded is a dataclass: each costs ~0.6 ms to create on Python
    # 3.12 (it compiles its generated methods); value records are NamedTuples instead
    assert probe["dataclasses"] == []
