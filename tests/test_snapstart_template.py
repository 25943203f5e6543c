"""SnapStart in the deployment: one parameter turns it on for every function (on in prod), every
function is published behind the `live` alias, and the API invokes the alias (SnapStart only
applies to published versions). Translated with the SAM CLI's own translator when installed."""

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.test_deployment import load_cfn_yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
SAM_PYTHON = ROOT / ".local" / "sam" / "bin" / "python"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_cfn_yaml(TEMPLATE)


def functions(template: dict[str, Any]) -> dict[str, Any]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def test_snapstart_and_the_alias_are_set_once_for_every_function(template: dict[str, Any]):
    parameter = template["Parameters"]["SnapStart"]
    assert parameter["AllowedValues"] == ["true", "false"]
    assert template["Conditions"]["SnapStartEnabled"] == {
        "Fn::Equals": [{"Ref": "SnapStart"}, "true"]
    }
    globals_ = template["Globals"]["Function"]
    assert globals_["AutoPublishAlias"] == "live"
    assert globals_["SnapStart"] == {
        "ApplyOn": {"Fn::If": ["SnapStartEnabled", "PublishedVersions", "None"]}
    }
    assert globals_["Runtime"] == "python3.12"  # SnapStart supports python3.12 and later
    for name, function in functions(template).items():
        properties = function["Properties"]
        assert "SnapStart" not in properties, f"{name} overrides the global SnapStart"
        assert "AutoPublishAlias" not in properties, f"{name} overrides the global alias"
        # A change to the shared layer alone must publish a version too (SAM does not accept
        # this one in Globals).
        assert properties["AutoPublishAliasAllProperties"] is True, name
        # What SnapStart does not support.
        assert "ProvisionedConcurrencyConfig" not in properties
        assert "FileSystemConfigs" not in properties
        assert properties.get("EphemeralStorage", {}).get("Size", 512) <= 512


def test_prod_deploys_with_snapstart():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    prod = config["prod"]["deploy"]["parameters"]["parameter_overrides"]
    assert "SnapStart=true" in prod


TRANSLATE = """
import json, sys
from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

template = yaml_parse(open(sys.argv[1]).read())
for resource in template["Resources"].values():
    properties = resource.get("Properties", {})
    for key in ("CodeUri", "ContentUri"):
        if key in properties:
            properties[key] = "s3://bucket/key.zip"

class NoManagedPolicies:
    def load(self):
        return {}

print(json.dumps(transform(template, {"SnapStart": "true"}, NoManagedPolicies())))
"""


@pytest.mark.skipif(not SAM_PYTHON.exists(), reason="SAM CLI not installed in .local/sam")
def test_the_api_routes_invoke_the_live_alias_of_each_function(template: dict[str, Any]):
    completed = subprocess.run(
        [str(SAM_PYTHON), "-c", TRANSLATE, str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_DEFAULT_REGION": "eu-west-1"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    resources = json.loads(completed.stdout)["Resources"]
    for name in functions(template):
        alias = resources[f"{name}Aliaslive"]
        assert alias["Type"] == "AWS::Lambda::Alias"
        assert resources[name]["Properties"]["SnapStart"] == {
            "ApplyOn": {"Fn::If": ["SnapStartEnabled", "PublishedVersions", "None"]}
        }
        permissions = [
            resource["Properties"]["FunctionName"]
            for resource in resources.values()
            if resource["Type"] == "AWS::Lambda::Permission"
            and resource["Properties"]["FunctionName"]
            in ({"Ref": name}, {"Ref": f"{name}Aliaslive"})
        ]
        assert all(p == {"Ref": f"{name}Aliaslive"} for p in permissions), name
        events = template["Resources"][name]["Properties"].get("Events", {}).values()
        if any(event["Type"] == "HttpApi" for event in events):
            assert permissions, name
        schedules = [
            resource["Properties"]["Target"]["Arn"]
            for resource in resources.values()
            if resource["Type"] == "AWS::Scheduler::Schedule"
            and name in json.dumps(resource["Properties"]["Target"]["Arn"])
        ]
        assert all(f"{name}Aliaslive" in json.dumps(arn) for arn in schedules), schedules
        if any(event["Type"] == "ScheduleV2" for event in events):
            assert schedules, name
    body = json.dumps(resources["HttpApi"]["Properties"]["Body"])
    integrations = body.count("/invocations")
    assert integrations == body.count("Aliaslive}/invocations") > 0
