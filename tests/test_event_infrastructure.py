"""template.yaml's event pieces: the bus, the reminders function on a one-minute schedule, the bus
name for every function, and events:PutEvents on that bus only, for the one function that
publishes. Plus the reminders function's cold start: no boto3 until it publishes."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_deployment import load_cfn_yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_cfn_yaml(ROOT / "template.yaml")


def _statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in function["Properties"].get("Policies", [])
        for statement in policy.get("Statement", [])
    ]


def test_the_stack_has_its_own_event_bus_and_every_function_knows_it(template):
    resources = template["Resources"]
    assert resources["TaskEventBus"]["Type"] == "AWS::Events::EventBus"
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["EVENT_BUS_NAME"] == {"Ref": "TaskEventBus"}
    functions = [r for r in resources.values() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) >= 3
    for function in functions:  # none overrides it
        assert "EVENT_BUS_NAME" not in function["Properties"]["Environment"]["Variables"]


def test_the_reminders_function_runs_every_minute(template):
    function = template["Resources"]["RemindersFunction"]["Properties"]
    assert function["CodeUri"] == "functions/reminders"
    assert (ROOT / "functions" / "reminders" / "app.py").is_file()
    [schedule] = function["Events"].values()
    assert schedule["Type"] == "ScheduleV2"
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert function["Timeout"] <= 60  # a run ends before the next one starts, normally
    assert function["LoggingConfig"]["LogGroup"]["Ref"] in template["Resources"]


def test_only_the_reminders_function_may_put_events_and_only_on_the_stacks_bus(template):
    resources = template["Resources"]
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        publishing = [s for s in _statements(resource) if "events:" in json.dumps(s["Action"])]
        if name != "RemindersFunction":
            assert publishing == [], name
            continue
        [statement] = publishing
        assert statement["Effect"] == "Allow"
        assert statement["Action"] == "events:PutEvents"
        assert statement["Resource"] == {"Fn::GetAtt": ["TaskEventBus", "Arn"]}


def test_the_reminders_handler_imports_no_aws_sdk_until_it_publishes():
    probe = (
        "import json, sys\n"
        "import functions.reminders.app\n"
        "print(json.dumps(sorted(m for m in ('boto3', 'cohere') if m in sys.modules)))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "shared" / "python")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
