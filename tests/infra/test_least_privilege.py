"""Least privilege on AWS: the functions connect to Postgres as the DML-only role (the
migrate function alone as the owner), authenticate to Valkey as a user of the cache's
user group, and each function's concurrency can be reserved (the auth function's is by
default). The database role's grants themselves: test_database_role.py; the VPC policy:
test_templates.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reservations_dev.template import load_template
from tests.infra.helpers import DATA_STACK, TEMPLATE
from tests.infra.test_templates import DATABASE_FUNCTIONS, VPC_PARAMETERS, resources_of, transform

# Every function that connects to Postgres except the migrate function.
APPLICATION_FUNCTIONS = tuple(name for name in DATABASE_FUNCTIONS if name != "MigrateFunction")
RESERVABLE = {
    "AuthFunction": "AuthReservedConcurrency",
    "ProvidersFunction": "ProvidersReservedConcurrency",
    "AppointmentsFunction": "AppointmentsReservedConcurrency",
    "IntegrationsFunction": "IntegrationsReservedConcurrency",
    "DocsFunction": "DocsReservedConcurrency",
    "CacheSyncFunction": "CacheSyncReservedConcurrency",
    "EventsFunction": "EventsReservedConcurrency",
}


@pytest.fixture(scope="module")
def transformed(sam_cli: Path) -> dict[str, Any]:
    return transform(sam_cli, VPC_PARAMETERS)


@pytest.fixture(scope="module")
def data_stack() -> dict[str, Any]:
    return load_template(DATA_STACK)


def role_of(document: dict[str, Any], function: str) -> dict[str, Any]:
    function_props = document["Resources"][function]["Properties"]
    role: dict[str, Any] = document["Resources"][function_props["Role"]["Fn::GetAtt"][0]]
    return role


class Resolver:
    """Just enough of CloudFormation's condition and Fn::If evaluation for these tests."""

    def __init__(self, document: dict[str, Any], parameters: dict[str, str]) -> None:
        defaults = {name: str(p.get("Default", "")) for name, p in document["Parameters"].items()}
        self.parameters = defaults | parameters
        self.conditions = document["Conditions"]

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref":
                return None if argument == "AWS::NoValue" else self.parameters[argument]
            if key == "Fn::If":
                name, yes, no = argument
                return self.value(yes if self.condition(name) else no)
            if key == "Fn::Equals":
                return str(self.value(argument[0])) == str(self.value(argument[1]))
            if key == "Fn::Not":
                return not self.value(argument[0])
            if key == "Fn::And":
                return all(self.value(a) for a in argument)
            if key == "Fn::Or":
                return any(self.value(a) for a in argument)
            if key == "Condition":
                return self.condition(argument)
            if key == "Fn::Join":
                return argument[0].join(str(self.value(a)) for a in self.value(argument[1]))
        if isinstance(node, list):
            return [self.value(item) for item in node]
        return node

    def condition(self, name: str) -> bool:
        return bool(self.value(self.conditions[name]))


# --------------------------------------------------------------------------- reserved concurrency


def reserved(document: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    resolver = Resolver(document, parameters)
    functions = resources_of(document, "AWS::Lambda::Function")
    return {
        name: resolver.value(function["Properties"].get("ReservedConcurrentExecutions"))
        for name, function in functions.items()
    }


def test_auth_is_capped_by_default_and_the_others_are_unreserved(transformed: dict[str, Any]) -> None:
    defaults = reserved(transformed, VPC_PARAMETERS)

    assert defaults.pop("AuthFunction") == "20"
    assert defaults == dict.fromkeys(defaults)  # no other function reserves anything
    parameters = transformed["Parameters"]
    for function, parameter in RESERVABLE.items():
        assert parameters[parameter]["Type"] == "Number", parameter
        assert parameters[parameter]["MinValue"] == -1, parameter
        condition, value, otherwise = transformed["Resources"][function]["Properties"]["ReservedConcurrentExecutions"][
            "Fn::If"
        ]
        assert (value, otherwise) == ({"Ref": parameter}, {"Ref": "AWS::NoValue"}), function
        assert transformed["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, -1]}]}
    assert "ReservedConcurrentExecutions" not in transformed["Resources"]["MigrateFunction"]["Properties"]


def test_each_function_can_be_reserved_or_released(sam_cli: Path) -> None:
    parameters = VPC_PARAMETERS | {
        "AuthReservedConcurrency": "-1",
        "EventsReservedConcurrency": "5",
        "ProvidersReservedConcurrency": "0",
    }
    document = transform(sam_cli, parameters)

    values = reserved(document, parameters)

    assert values["AuthFunction"] is None
    assert values["EventsFunction"] == "5"
    assert values["ProvidersFunction"] == "0"  # 0 is a valid reservation: the function is switched off
    assert values["AppointmentsFunction"] is None


# --------------------------------------------------------------------------- database credentials


def test_application_functions_connect_as_the_dml_role_and_migrate_as_the_owner(transformed: dict[str, Any]) -> None:
    functions = resources_of(transformed, "AWS::Lambda::Function")
    api_secret = {"Fn::If": ["UseApiDatabaseSecret", {"Ref": "ApiDatabaseSecretArn"}, {"Ref": "DatabaseSecretArn"}]}
    for name in APPLICATION_FUNCTIONS:
        assert functions[name]["Properties"]["Environment"]["Variables"]["DATABASE_SECRET_ARN"] == api_secret, name
    migrate = functions["MigrateFunction"]["Properties"]["Environment"]["Variables"]
    assert migrate["DATABASE_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"}

    # With ApiDatabaseSecretArn the role's secret; without it (older stacks) the owner's.
    conditions = Resolver(transformed, VPC_PARAMETERS)
    assert conditions.value(api_secret) == VPC_PARAMETERS["ApiDatabaseSecretArn"]
    assert (
        Resolver(transformed, VPC_PARAMETERS | {"ApiDatabaseSecretArn": ""}).value(api_secret)
        == (VPC_PARAMETERS["DatabaseSecretArn"])
    )
    # The migrate function learns the role's secret from its custom resource.
    (migrations,) = resources_of(transformed, "Custom::DatabaseMigrations").values()
    assert migrations["Properties"]["ApiDatabaseSecretArn"] == {
        "Fn::If": ["UseApiDatabaseSecret", {"Ref": "ApiDatabaseSecretArn"}, ""]
    }


def test_only_the_migrate_function_may_read_the_owners_secret(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    owner_readers = {
        name
        for name, role in resources_of(transformed, "AWS::IAM::Role").items()
        if '"DatabaseSecretReadPolicy"' in json.dumps(role)
    }
    assert owner_readers == {"MigrateFunctionRole"}
    (statement,) = resources["DatabaseSecretReadPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Resource"] == {"Ref": "DatabaseSecretArn"}
    (statement,) = resources["ApiDatabaseSecretReadPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == {
        "Fn::If": ["UseApiDatabaseSecret", {"Ref": "ApiDatabaseSecretArn"}, {"Ref": "DatabaseSecretArn"}]
    }
    attached = {"Fn::If": ["UseDatabaseSecret", {"Ref": "ApiDatabaseSecretReadPolicy"}, {"Ref": "AWS::NoValue"}]}
    for name in APPLICATION_FUNCTIONS:
        assert attached in role_of(transformed, name)["Properties"]["ManagedPolicyArns"], name
    migrate = role_of(transformed, "MigrateFunction")["Properties"]["ManagedPolicyArns"]
    assert {"Fn::If": ["UseApiDatabaseSecret", {"Ref": "ApiDatabaseSecretReadPolicy"}, {"Ref": "AWS::NoValue"}]} in (
        migrate
    )
    assert "ApiDatabaseRoleNeedsTheOwner" in load_template(TEMPLATE)["Rules"]


def test_the_data_stack_creates_the_dml_role_secret_and_the_proxy_accepts_it(data_stack: dict[str, Any]) -> None:
    resources = data_stack["Resources"]
    secret = resources["ApiDatabaseSecret"]["Properties"]["GenerateSecretString"]
    shape = secret["SecretStringTemplate"]["Fn::Sub"]
    assert json.loads(shape.replace("${ApiDatabaseUsername}", "u").replace("${DatabaseName}", "d")) == {
        "username": "u",
        "dbname": "d",
        "engine": "postgres",
        "port": 5432,
    }
    assert secret["GenerateStringKey"] == "password" and secret["PasswordLength"] >= 32
    assert "'" in secret["ExcludeCharacters"] and "\\" in secret["ExcludeCharacters"]
    assert data_stack["Parameters"]["ApiDatabaseUsername"]["Default"] == "reservations_api"
    attachments = {
        r["Properties"]["SecretId"]["Ref"]
        for r in resources.values()
        if r["Type"] == "AWS::SecretsManager::SecretTargetAttachment"
    }
    assert attachments == {"DatabaseSecret", "ApiDatabaseSecret"}  # both get host and port

    auth = resources["DatabaseProxy"]["Properties"]["Auth"]
    assert {a["SecretArn"]["Ref"] for a in auth} == {"DatabaseSecret", "ApiDatabaseSecret"}
    assert all(a["ClientPasswordAuthType"] == "POSTGRES_SCRAM_SHA_256" and a["IAMAuth"] == "DISABLED" for a in auth)
    (policy,) = resources["ProxyRole"]["Properties"]["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Resource"] == [{"Ref": "DatabaseSecret"}, {"Ref": "ApiDatabaseSecret"}]
    assert data_stack["Outputs"]["ApiDatabaseSecretArn"]["Value"] == {"Ref": "ApiDatabaseSecret"}


# --------------------------------------------------------------------------- Valkey


def test_the_cache_requires_auth_as_the_application_user(data_stack: dict[str, Any]) -> None:
    resources = data_stack["Resources"]
    cache = resources["Cache"]["Properties"]
    group = resources[cache["UserGroupId"]["Ref"]]
    assert group["Type"] == "AWS::ElastiCache::UserGroup"
    assert group["Properties"]["Engine"] == cache["Engine"] == "valkey"
    users = {ref["Ref"]: resources[ref["Ref"]]["Properties"] for ref in group["Properties"]["UserIds"]}
    assert all(resources[name]["Type"] == "AWS::ElastiCache::User" for name in users)

    # The default user (every connection before AUTH) is disabled and may run nothing.
    (default,) = [u for u in users.values() if u["UserName"] == "default"]
    assert default["AccessString"].split()[0] == "off" and "-@all" in default["AccessString"].split()

    (app,) = [u for u in users.values() if u["UserName"] != "default"]
    words = app["AccessString"].split()
    assert words[0] == "on"
    keys = sorted(w for w in words if w.startswith("~"))
    assert keys == ["~provider:*", "~ratelimit*"]  # the slot cache's and the rate limiter's keys only
    assert words[-1] == "-@dangerous" and "+@all" in words and not any(w.startswith(("&", "allkeys")) for w in words)
    # Its password comes from a generated Secrets Manager secret, never from the template.
    assert app["AuthenticationMode"]["Type"] == "password"
    (password,) = app["AuthenticationMode"]["Passwords"]
    assert password == {"Fn::Sub": "{{resolve:secretsmanager:${CacheSecret}:SecretString:password}}"}
    secret = resources["CacheSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    generated = secret["Properties"]["GenerateSecretString"]
    assert generated["GenerateStringKey"] == "password" and generated["PasswordLength"] >= 32
    username = json.loads(generated["SecretStringTemplate"]["Fn::Sub"])["username"]
    assert username == app["UserName"]["Fn::Sub"]  # the secret's username is the cache user's name

    outputs = data_stack["Outputs"]
    assert outputs["RedisSecretArn"]["Value"] == {"Ref": "CacheSecret"}
    assert "@" not in outputs["RedisUrl"]["Value"]["Fn::Sub"]  # no credentials in the URL


def test_functions_that_use_the_cache_may_read_its_secret(transformed: dict[str, Any]) -> None:
    functions = resources_of(transformed, "AWS::Lambda::Function")
    readers = {name for name in functions if '"CacheSecretReadPolicy"' in json.dumps(role_of(transformed, name))}
    assert readers == set(APPLICATION_FUNCTIONS)
    (statement,) = transformed["Resources"]["CacheSecretReadPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Resource"] == {"Ref": "RedisSecretArn"}
    assert transformed["Resources"]["CacheSecretReadPolicy"]["Condition"] == "HasRedisSecret"
    for name in APPLICATION_FUNCTIONS:
        variables = functions[name]["Properties"]["Environment"]["Variables"]
        assert variables["REDIS_SECRET_ARN"] == {
            "Fn::If": ["HasRedisSecret", {"Ref": "RedisSecretArn"}, {"Ref": "AWS::NoValue"}]
        }, name
    for name in ("MigrateFunction", "DocsFunction"):  # no cache, no secret
        assert functions[name]["Properties"]["Environment"]["Variables"]["REDIS_SECRET_ARN"] == {"Ref": "AWS::NoValue"}
