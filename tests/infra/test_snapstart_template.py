"""SnapStart in the template: the HTTP API functions snapshot their published versions when
the SnapStart parameter (Auto: on for the prod stage) says so, are always invoked through
their `live` alias, publish a new version when their layer changes and delete the versions
they replace; the scheduled and queue functions stay as they were.

The SAM transform is test_templates' own (CloudFormation's, run in the SAM tool venv); the
template's conditions are then evaluated for the given parameter values, as CloudFormation
would, so "on" and "off" are checked on what would be deployed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from reservations_dev.template import load_template
from tests.infra import test_templates
from tests.infra.helpers import TEMPLATE, sam_python

API_FUNCTIONS = test_templates.API_FUNCTIONS
NOT_SNAPSTARTED = ("CacheSyncFunction", "EventsFunction", "MigrateFunction")
BASE = test_templates.VPC_PARAMETERS
resources_of = test_templates.resources_of
NO_VALUE = object()
MAX_EPHEMERAL_MB = 512  # SnapStart refuses more ephemeral storage

# test_templates.TRANSFORM with the layer's ContentUri as given (argv[3]), so two
# transforms can differ in the layer's content only.
TRANSFORM_WITH_LAYER = test_templates.TRANSFORM.replace(
    'text = re.sub(r"(CodeUri|ContentUri): \\S+", r"\\1: s3://bucket/key", text)',
    'text = re.sub(r"CodeUri: \\S+", "CodeUri: s3://bucket/key", text)\n'
    'text = re.sub(r"ContentUri: \\S+", "ContentUri: " + sys.argv[3], text)',
)


# --------------------------------------------------------------------------- evaluation


def parameter_values(document: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    defaults = {name: spec.get("Default") for name, spec in document["Parameters"].items()}
    return {**defaults, **given}


def condition(document: dict[str, Any], node: Any, values: dict[str, Any]) -> Any:
    """A condition (or one of its operands) of `document`, as CloudFormation evaluates it."""
    if not isinstance(node, dict):
        return node
    ((function, argument),) = node.items()
    if function == "Ref":
        return values[argument]
    if function == "Condition":
        return condition(document, document["Conditions"][argument], values)
    if function == "Fn::Equals":
        left, right = (condition(document, operand, values) for operand in argument)
        return str(left) == str(right)
    if function == "Fn::And":
        return all(condition(document, operand, values) for operand in argument)
    if function == "Fn::Or":
        return any(condition(document, operand, values) for operand in argument)
    if function == "Fn::Not":
        return not condition(document, argument[0], values)
    raise AssertionError(f"unexpected {function} in a condition")


def resolve(document: dict[str, Any], value: Any, values: dict[str, Any]) -> Any:
    """`value` with its Fn::If resolved; NO_VALUE where it resolves to AWS::NoValue."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, if_true, if_false = value["Fn::If"]
            chosen = if_true if condition(document, document["Conditions"][name], values) else if_false
            return resolve(document, chosen, values)
        if value == {"Ref": "AWS::NoValue"}:
            return NO_VALUE
        items = {key: resolve(document, item, values) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not NO_VALUE}
    if isinstance(value, list):
        return [item for item in (resolve(document, entry, values) for entry in value) if item is not NO_VALUE]
    return value


def deployed_functions(sam_cli: Path, given: dict[str, str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The transformed template for these parameter values, and its functions' properties
    with SnapStart resolved (absent where its condition leaves AWS::NoValue)."""
    document = test_templates.transform(sam_cli, {**BASE, **given})
    values = parameter_values(document, {**BASE, **given})
    functions = {}
    for name, function in resources_of(document, "AWS::Lambda::Function").items():
        props = dict(function["Properties"])
        if "SnapStart" in props:
            snap_start = resolve(document, props.pop("SnapStart"), values)
            if snap_start is not NO_VALUE:
                props["SnapStart"] = snap_start
        functions[name] = props
    return document, functions


def transform_with_layer(sam_cli: Path, layer_uri: str) -> dict[str, Any]:
    return sam_python(sam_cli, TRANSFORM_WITH_LAYER, str(TEMPLATE), json.dumps(BASE), layer_uri)


def aliases(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Function logical id -> its alias resource."""
    return {
        alias["Properties"]["FunctionName"]["Ref"]: alias
        for alias in resources_of(document, "AWS::Lambda::Alias").values()
    }


def versions(document: dict[str, Any]) -> dict[str, str]:
    """Function logical id -> the logical id of the version its alias points to."""
    return {name: alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0] for name, alias in aliases(document).items()}


# --------------------------------------------------------------------------- the switch


@pytest.mark.parametrize(
    ("given", "on"),
    [
        ({"Stage": "prod"}, True),  # the default, Auto, on the prod stage
        ({}, False),  # the default stage (dev)
        ({"Stage": "staging"}, False),
        ({"Stage": "dev", "SnapStart": "Enabled"}, True),
        ({"Stage": "prod", "SnapStart": "Disabled"}, False),
    ],
)
def test_the_api_functions_snapshot_their_published_versions_when_the_parameter_says_so(
    sam_cli: Path, given: dict[str, str], on: bool
) -> None:
    document, functions = deployed_functions(sam_cli, given)
    by_alias = aliases(document)
    for name in API_FUNCTIONS:
        snap_start = functions[name].get("SnapStart")
        assert snap_start == ({"ApplyOn": "PublishedVersions"} if on else None), (name, given)
        # Always invoked through an alias: SnapStart works on published versions only, and
        # SAM cannot make the alias conditional (AutoPublishAlias takes a string or a Ref).
        assert by_alias[name]["Properties"]["Name"] == "live", name
    for name in NOT_SNAPSTARTED:
        assert "SnapStart" not in functions[name], name
        assert name not in by_alias, name


def test_the_parameter_defaults_to_auto_and_is_in_the_deployment_group() -> None:
    source = load_template(TEMPLATE)
    parameter = source["Parameters"]["SnapStart"]
    assert parameter["Default"] == "Auto"
    assert sorted(parameter["AllowedValues"]) == ["Auto", "Disabled", "Enabled"]
    groups = source["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    deployment = next(group for group in groups if group["Label"]["default"] == "Deployment")
    assert "SnapStart" in deployment["Parameters"]


# --------------------------------------------------------------------------- what SnapStart needs


def test_snapstarted_functions_meet_snapstarts_requirements(sam_cli: Path) -> None:
    _, functions = deployed_functions(sam_cli, {"SnapStart": "Enabled"})
    for name in API_FUNCTIONS:
        props = functions[name]
        runtime = re.fullmatch(r"python3\.(\d+)", props["Runtime"])
        assert runtime is not None and int(runtime.group(1)) >= 12, (name, props["Runtime"])  # Python 3.12+
        assert props.get("PackageType", "Zip") == "Zip", name  # no container images
        assert "FileSystemConfigs" not in props, name  # no EFS
        assert props.get("EphemeralStorage", {}).get("Size", 512) <= MAX_EPHEMERAL_MB, name


def test_no_provisioned_concurrency_and_replaced_versions_are_deleted(sam_cli: Path) -> None:
    document, _ = deployed_functions(sam_cli, {"SnapStart": "Enabled"})
    resources = document["Resources"]
    for name, version in versions(document).items():
        # Every version keeps a billed snapshot while it exists: none outlives its replacement.
        assert resources[version]["DeletionPolicy"] == "Delete", name
    for name, alias in aliases(document).items():
        assert "ProvisionedConcurrencyConfig" not in alias["Properties"], name
    assert "ProvisionedConcurrencyConfig" not in json.dumps(document)


def test_the_http_api_invokes_the_alias(sam_cli: Path) -> None:
    document, _ = deployed_functions(sam_cli, {"SnapStart": "Enabled"})
    paths = document["Resources"]["HttpApi"]["Properties"]["Body"]["paths"]
    integrations = [
        operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
        for path in paths.values()
        for operation in path.values()
        if isinstance(operation, dict) and "x-amazon-apigateway-integration" in operation
    ]
    assert integrations
    targets = {re.search(r"functions/\$\{(\w+)\}/invocations", uri).group(1) for uri in integrations}  # type: ignore[union-attr]
    assert targets == {f"{name}Aliaslive" for name in API_FUNCTIONS}
    permissions = resources_of(document, "AWS::Lambda::Permission").values()
    api_permissions = [p for p in permissions if p["Properties"]["Principal"] == "apigateway.amazonaws.com"]
    assert api_permissions
    assert {p["Properties"]["FunctionName"]["Ref"] for p in api_permissions} == targets


def test_a_new_layer_publishes_new_versions_of_the_api_functions(sam_cli: Path) -> None:
    # The reservations package lives in the layer: a release that changes only the layer
    # must move the alias, or the API keeps running the old code.
    first = versions(transform_with_layer(sam_cli, "s3://bucket/layer-1"))
    second = versions(transform_with_layer(sam_cli, "s3://bucket/layer-2"))
    assert set(first) == set(second) == set(API_FUNCTIONS)
    assert all(first[name] != second[name] for name in API_FUNCTIONS), (first, second)
    assert versions(transform_with_layer(sam_cli, "s3://bucket/layer-1")) == first  # and only then
