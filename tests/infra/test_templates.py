"""The templates: linters clean, and what SAM turns template.yaml into holds the
promises of the design (throttling, CORS, logs, least privilege, migrations on deploy).

SAM's transform runs in the SAM tool venv (it ships aws-sam-translator), exactly as
CloudFormation runs it, with CodeUri values swapped for S3 URIs it accepts.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from reservations_dev.template import load_template
from tests.infra.helpers import DATA_STACK, REPO, TEMPLATE, run, sam_python

SENSITIVE_ROUTES = {
    "POST /token",
    "POST /register",
    "POST /password-reset/request",
    "POST /password-reset/confirm",
    "POST /email-verification/request",
    "POST /email-verification/confirm",
}
API_FUNCTIONS = ("AuthFunction", "ProvidersFunction", "AppointmentsFunction", "IntegrationsFunction", "DocsFunction")
DATABASE_FUNCTIONS = (
    "AuthFunction",
    "ProvidersFunction",
    "AppointmentsFunction",
    "IntegrationsFunction",
    "CacheSyncFunction",
    "EventsFunction",
    "MigrateFunction",
)
# The functions that publish to the event bus: every API function that writes, and the
# events function's dispatch pass (the outbox's safety net).
PUBLISHERS = ("AuthFunction", "ProvidersFunction", "AppointmentsFunction", "IntegrationsFunction", "EventsFunction")
ALL_FUNCTIONS = (*DATABASE_FUNCTIONS, "DocsFunction")
API_GATEWAY_TIMEOUT_SECONDS = 30

TRANSFORM = r"""
import json, re, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

text = open(sys.argv[1]).read()
text = re.sub(r"(CodeUri|ContentUri): \S+", r"\1: s3://bucket/key", text)
print(json.dumps(transform(yaml_parse(text), json.loads(sys.argv[2]), NoManagedPolicies())))
"""

VPC_PARAMETERS = {
    "JwtSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:jwt-AbCdEf",
    "DatabaseSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
    "ApiDatabaseSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-api-AbCdEf",
    "RedisSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:cache-AbCdEf",
    "CorsOrigins": "https://app.example.com,https://admin.example.com",
    "SubnetIds": "subnet-0a,subnet-0b",
    "SecurityGroupIds": "sg-0a",
    "EmailSender": "no-reply@example.com",
}


def transform(sam_cli: Path, parameters: dict[str, str]) -> dict[str, Any]:
    return sam_python(sam_cli, TRANSFORM, str(TEMPLATE), json.dumps(parameters))


@pytest.fixture(scope="module")
def transformed(sam_cli: Path) -> dict[str, Any]:
    return transform(sam_cli, VPC_PARAMETERS)


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return load_template(TEMPLATE)


def resources_of(document: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in document["Resources"].items() if r["Type"] == kind}


# --------------------------------------------------------------------------- linters


def test_cfn_lint_is_clean_on_every_template() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = run([str(cfn_lint), str(TEMPLATE), str(DATA_STACK)], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_is_clean(sam_cli: Path) -> None:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    result = run([str(sam_cli), "validate", "--lint", "--template-file", str(TEMPLATE)], timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


# --------------------------------------------------------------------------- functions


def test_every_function_runs_python312_on_the_architecture_parameter(transformed: dict[str, Any]) -> None:
    functions = resources_of(transformed, "AWS::Lambda::Function")
    assert sorted(functions) == sorted(ALL_FUNCTIONS)
    for name, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == "python3.12", name
        assert props["Architectures"] == [{"Ref": "Architecture"}], name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert props["Layers"] == [{"Ref": next(iter(resources_of(transformed, "AWS::Lambda::LayerVersion")))}]
        variables = props["Environment"]["Variables"]
        assert variables["POWERTOOLS_SERVICE_NAME"] == "reservations"
        assert variables["POWERTOOLS_METRICS_NAMESPACE"]
        assert variables["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
        assert 128 <= props["MemorySize"] <= 2048, name
    assert transformed["Parameters"]["Architecture"]["Default"] == "arm64"


def test_api_functions_answer_before_the_http_api_gives_up(transformed: dict[str, Any]) -> None:
    functions = resources_of(transformed, "AWS::Lambda::Function")
    for name in API_FUNCTIONS:
        assert functions[name]["Properties"]["Timeout"] < API_GATEWAY_TIMEOUT_SECONDS, name
    assert functions["MigrateFunction"]["Properties"]["Timeout"] >= 300


def test_layer_is_built_by_its_makefile_for_the_target_architecture(source: dict[str, Any]) -> None:
    layer = source["Resources"]["SharedLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/shared/"
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": {"Ref": "Architecture"}}
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert "build-SharedLayer:" in (REPO / "layers" / "shared" / "Makefile").read_text()


def test_vpc_config_only_when_subnets_and_security_groups_are_given(transformed: dict[str, Any]) -> None:
    functions = resources_of(transformed, "AWS::Lambda::Function")
    for name in DATABASE_FUNCTIONS:
        condition, in_vpc, outside = functions[name]["Properties"]["VpcConfig"]["Fn::If"]
        assert condition == "InVpc"
        assert in_vpc == {"SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"}}
        assert outside == {"Ref": "AWS::NoValue"}
    assert "VpcConfig" not in functions["DocsFunction"]["Properties"]
    assert "InVpc" in transformed["Conditions"]


def schedules(document: dict[str, Any]) -> dict[str, list[Any]]:
    """Function logical id -> the schedule expressions of the rules that invoke it."""
    found: dict[str, list[Any]] = {}
    for rule in resources_of(document, "AWS::Events::Rule").values():
        props = rule["Properties"]
        if "ScheduleExpression" in props:
            for target in props["Targets"]:
                found.setdefault(target["Arn"]["Fn::GetAtt"][0], []).append(props["ScheduleExpression"])
    return found


def test_cache_sync_runs_on_the_schedule_parameter(transformed: dict[str, Any]) -> None:
    assert schedules(transformed) == {
        "CacheSyncFunction": [{"Ref": "SyncScheduleRate"}],
        "EventsFunction": ["rate(1 minute)"],
    }


# --------------------------------------------------------------------------- HTTP API


def test_http_api_uses_the_default_stage_with_throttling_and_access_logs(transformed: dict[str, Any]) -> None:
    (stage,) = resources_of(transformed, "AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "$default"
    assert props["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ThrottleRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ThrottleBurstLimit"},
    }
    assert set(props["RouteSettings"]) == SENSITIVE_ROUTES
    for settings in props["RouteSettings"].values():
        assert settings == {
            "ThrottlingRateLimit": {"Ref": "AuthThrottleRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "AuthThrottleBurstLimit"},
        }
    parameters = transformed["Parameters"]
    assert parameters["AuthThrottleRateLimit"]["Default"] < parameters["ThrottleRateLimit"]["Default"]
    assert parameters["AuthThrottleBurstLimit"]["Default"] < parameters["ThrottleBurstLimit"]["Default"]

    log_settings = props["AccessLogSettings"]
    assert log_settings["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert json.loads(log_settings["Format"].replace("$context.", ""))  # one JSON object per request
    log_group = transformed["Resources"]["ApiAccessLogGroup"]["Properties"]
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_cors_origins_come_from_a_parameter(transformed: dict[str, Any]) -> None:
    body = transformed["Resources"]["HttpApi"]["Properties"]["Body"]
    condition, cors, otherwise = body["x-amazon-apigateway-cors"]["Fn::If"]
    assert condition == "HasCorsOrigins"
    assert cors["allowOrigins"] == {"Fn::Split": [",", VPC_PARAMETERS["CorsOrigins"]]}
    assert "authorization" in cors["allowHeaders"]
    assert otherwise == {"Ref": "AWS::NoValue"}


def test_every_function_logs_to_its_own_group_with_retention(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    for name, function in resources_of(transformed, "AWS::Lambda::Function").items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


# --------------------------------------------------------------------------- permissions


def _statements(document: dict[str, Any], role: dict[str, Any]) -> list[dict[str, Any]]:
    statements = [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for arn in role["Properties"].get("ManagedPolicyArns", []):
        candidates = [arn] if not isinstance(arn, dict) or "Fn::If" not in arn else arn["Fn::If"][1:2]
        for candidate in candidates:
            if isinstance(candidate, dict) and "Ref" in candidate and candidate["Ref"] in document["Resources"]:
                managed = document["Resources"][candidate["Ref"]]["Properties"]["PolicyDocument"]
                statements.extend(managed["Statement"])
    return statements


def test_functions_read_only_the_named_secrets(transformed: dict[str, Any]) -> None:
    roles = resources_of(transformed, "AWS::IAM::Role")
    functions = resources_of(transformed, "AWS::Lambda::Function")
    allowed = {
        json.dumps(arn)
        for arn in (
            {"Ref": "JwtSecretArn"},
            {"Ref": "DatabaseSecretArn"},
            {"Ref": "RedisSecretArn"},
            {"Fn::If": ["UseApiDatabaseSecret", {"Ref": "ApiDatabaseSecretArn"}, {"Ref": "DatabaseSecretArn"}]},
        )
    }
    for name, function in functions.items():
        role = roles[function["Properties"]["Role"]["Fn::GetAtt"][0]]
        for statement in _statements(transformed, role):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            # Only listing network interfaces works on "*" alone (NetworkInterfacesPolicy).
            assert statement["Resource"] != "*" or actions == ["ec2:DescribeNetworkInterfaces"], (name, statement)
            if any(a.startswith("secretsmanager:") for a in actions):
                assert actions == ["secretsmanager:GetSecretValue"], name
                assert json.dumps(statement["Resource"]) in allowed, (name, statement)
    readers = {
        name
        for name, function in functions.items()
        for statement in _statements(transformed, roles[function["Properties"]["Role"]["Fn::GetAtt"][0]])
        if statement["Resource"] == {"Ref": "JwtSecretArn"}
    }
    # The API functions that verify bearer tokens; the events function signs nothing.
    assert readers == {"AuthFunction", "ProvidersFunction", "AppointmentsFunction", "IntegrationsFunction"}


def test_email_only_from_the_sender_identity(transformed: dict[str, Any]) -> None:
    policy = transformed["Resources"]["SendMailPolicy"]
    assert "Condition" not in policy  # EmailSender is required: APP_ENV=aws refuses to start without it
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    # The mailer sends raw RFC 5322 messages (SesMailer: send_raw_email), attachments included.
    assert sorted(statement["Action"]) == ["ses:SendEmail", "ses:SendRawEmail"]
    assert "send_raw_email" in (REPO / "shared" / "reservations" / "adapters" / "mail.py").read_text()
    assert all(":identity/" in json.dumps(resource) for resource in statement["Resource"])
    assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": {"Ref": "EmailSender"}}}
    roles = resources_of(transformed, "AWS::IAM::Role")
    senders = {name for name, role in roles.items() if "SendMailPolicy" in json.dumps(role)}
    # All mail is queued in outgoing_mail and sent by the events function alone.
    assert senders == {"EventsFunctionRole"}
    for name, role in roles.items():
        assert "ses:" not in json.dumps(role.get("Properties", {}).get("Policies", [])), name


VPC_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_vpc_permissions_only_when_in_a_vpc(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    vpc_functions = set(DATABASE_FUNCTIONS)
    attached = set()
    for name, role in resources_of(transformed, "AWS::IAM::Role").items():
        text = json.dumps(role)
        # No AWS managed policy that grants logs or ENIs on "*".
        assert "AWSLambdaVPCAccessExecutionRole" not in text, name
        assert "AWSLambdaBasicExecutionRole" not in text, f"{name}: logs are granted on its own group only"
        assert "ec2:" not in json.dumps(role["Properties"].get("Policies", [])), name
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            if "NetworkInterfacesPolicy" in json.dumps(arn):
                assert arn == {"Fn::If": ["InVpc", {"Ref": "NetworkInterfacesPolicy"}, {"Ref": "AWS::NoValue"}]}, name
                attached.add(name.removesuffix("Role"))
    assert attached == vpc_functions

    policy = resources["NetworkInterfacesPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert policy["Condition"] == "InVpc"
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s for s in statements)
    granted = [action for statement in statements for action in _actions(statement)]
    assert sorted(granted) == sorted(VPC_ACTIONS)  # exactly these, each once
    by_action = {action: statement for statement in statements for action in _actions(statement)}
    # Describe works on "*" only; everything else is scoped to this account's interfaces.
    assert by_action["ec2:DescribeNetworkInterfaces"]["Resource"] == "*"
    interfaces = {"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:network-interface/*"}
    for action in ("ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"):
        assert by_action[action]["Resource"] == interfaces, action
    # Created only in the functions' subnets, with their security groups.
    create = json.dumps(by_action["ec2:CreateNetworkInterface"]["Resource"])
    assert "network-interface/*" in create
    assert ":subnet/${Subnets}" in create and ":security-group/${Groups}" in create
    assert '{"Ref": "SubnetIds"}' in create and '{"Ref": "SecurityGroupIds"}' in create


# --------------------------------------------------------------------------- migrations and outputs


def test_migrations_run_as_a_custom_resource_on_every_layer_change(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    (migrations,) = [r for r in resources.values() if r["Type"] == "Custom::DatabaseMigrations"]
    props = migrations["Properties"]
    assert props["ServiceToken"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
    layer = next(iter(resources_of(transformed, "AWS::Lambda::LayerVersion")))
    assert props["SharedLayerVersion"] == {"Ref": layer}
    assert int(props["ServiceTimeout"]) > resources["MigrateFunction"]["Properties"]["Timeout"]
    for name in (
        "AuthFunction",
        "ProvidersFunction",
        "AppointmentsFunction",
        "IntegrationsFunction",
        "CacheSyncFunction",
        "EventsFunction",
    ):
        depends = resources[name].get("DependsOn", [])
        assert "DatabaseMigrations" in (depends if isinstance(depends, list) else [depends]), name


def test_outputs_name_the_api_url_and_every_function(source: dict[str, Any]) -> None:
    outputs = source["Outputs"]
    assert "ApiUrl" in outputs
    for name in ALL_FUNCTIONS:
        assert outputs[f"{name}Name"]["Value"] == {"Ref": name}


def test_parameters_cover_database_cache_secrets_sender_vpc_and_stage(source: dict[str, Any]) -> None:
    parameters = source["Parameters"]
    for name in (
        "DatabaseSecretArn",
        "DatabaseUrl",
        "RedisUrl",
        "JwtSecretArn",
        "EmailSender",
        "SubnetIds",
        "SecurityGroupIds",
        "Stage",
        "CorsOrigins",
        "SyncScheduleRate",
        "ReminderHoursBefore",
        "OutboxRetentionDays",
    ):
        assert name in parameters, name
    # Every parameter is in exactly one group of the console's parameter form.
    groups = source["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) <= set(parameters), sorted(set(grouped) - set(parameters))
    events_group = next(g for g in groups if g["Label"]["default"] == "Events and notifications")
    assert events_group["Parameters"] == ["ReminderHoursBefore", "OutboxRetentionDays"]
    assert parameters["DatabaseUrl"]["NoEcho"] is True
    assert set(source["Rules"]) == {"DatabaseIsConfigured", "VpcIsComplete", "ApiDatabaseRoleNeedsTheOwner"}


def test_data_stack_outputs_feed_template_parameters(source: dict[str, Any]) -> None:
    data = load_template(DATA_STACK)
    feeds = set(data["Outputs"]) & set(source["Parameters"])
    assert feeds == {
        "DatabaseSecretArn",
        "ApiDatabaseSecretArn",
        "DatabaseHost",
        "RedisUrl",
        "RedisSecretArn",
        "SubnetIds",
        "SecurityGroupIds",
        "JwtSecretArn",
    }
    kinds = {r["Type"] for r in data["Resources"].values()}
    assert {
        "AWS::RDS::DBCluster",
        "AWS::RDS::DBProxy",
        "AWS::ElastiCache::ServerlessCache",
        "AWS::SecretsManager::Secret",
    } <= kinds
    cluster = next(r for r in data["Resources"].values() if r["Type"] == "AWS::RDS::DBCluster")
    assert cluster["Properties"]["Engine"] == "aurora-postgresql"
    assert "ServerlessV2ScalingConfiguration" in cluster["Properties"]
    proxy = next(r for r in data["Resources"].values() if r["Type"] == "AWS::RDS::DBProxy")
    assert proxy["Properties"]["RequireTLS"] is True


def test_docker_compose_pins_postgres16_and_redis7_with_health_checks() -> None:
    import yaml

    compose = yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert re.fullmatch(r"postgres:16\.\d+(-alpine)?", services["postgres"]["image"])
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-alpine)?", services["redis"]["image"])
    for service in services.values():
        assert service["healthcheck"]["test"]


def test_samconfig_builds_cached_and_parallel_and_lints() -> None:
    import tomllib

    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    for env in ("default", "dev", "prod"):
        assert config[env]["build"]["parameters"] == {"cached": True, "parallel": True}, env
        assert config[env]["validate"]["parameters"]["lint"] is True, env
        deploy = config[env]["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM", env
        assert f"Stage={'dev' if env == 'default' else env}" in deploy["parameter_overrides"], env
    assert config["prod"]["deploy"]["parameters"]["confirm_changeset"] is True


def test_env_local_json_only_sets_variables_the_template_declares(source: dict[str, Any]) -> None:
    # sam local applies an env-vars file only to variables the function already declares.
    declared = set(source["Globals"]["Function"]["Environment"]["Variables"])
    local = json.loads((REPO / "infra" / "env.local.json").read_text())["Parameters"]
    assert set(local) <= declared, sorted(set(local) - declared)
    assert local["APP_ENV"] == "local"
