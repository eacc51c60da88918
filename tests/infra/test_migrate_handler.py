"""The migrate function as CloudFormation drives it, with the database credentials read
from a Secrets Manager secret of the RDS shape (moto) - the production path.

The local Postgres has no TLS, so DATABASE_TLS=false turns off what a secret implies.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy.engine import make_url

from reservations import migrations
from reservations.adapters.credentials import database_url, url_from_rds_secret
from reservations.config import ConfigurationError, load_settings, settings_from_environment
from reservations_dev.harness import LambdaContext
from tests.infra.helpers import load_event
from tests.support import load_function


def context(seconds: float = 600) -> LambdaContext:
    return LambdaContext(
        function_name="reservations-dev-MigrateFunction", memory_limit_in_mb=512, timeout_seconds=seconds
    )


def rds_secret(url: str, **changes: Any) -> dict[str, Any]:
    parsed = make_url(url)
    secret = {
        "engine": "postgres",
        "username": parsed.username or "postgres",
        "password": parsed.password or "unused-with-trust-auth",
        "host": parsed.host,
        "port": parsed.port or 5432,
        "dbname": parsed.database,
        "dbClusterIdentifier": "reservations-test",
    }
    return secret | changes


@pytest.fixture
def secrets_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from aws_lambda_powertools.utilities import parameters

    with mock_aws():
        parameters.clear_caches()
        settings_from_environment.cache_clear()
        yield boto3.client("secretsmanager", region_name="us-east-1")
        parameters.clear_caches()
        settings_from_environment.cache_clear()


@pytest.fixture
def migrate(
    secrets_manager: Any, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, str, str]]:
    if make_url(empty_database).host is None:
        pytest.skip("the test Postgres is a Unix socket: an RDS-shaped secret needs a host")
    arn = secrets_manager.create_secret(
        Name=f"reservations/test/{uuid.uuid4().hex[:6]}", SecretString=json.dumps(rds_secret(empty_database))
    )["ARN"]
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    monkeypatch.setenv("DATABASE_TLS", "false")
    # DATABASE_URL (the suite's own database) stays set: the secret must win over it.
    module = load_function("migrate")
    yield module, arn, empty_database


def custom_resource_event(kind: str, sink: Any) -> dict[str, Any]:
    event = load_event(f"cfn-migrate-{kind}.json")
    event["ResponseURL"] = sink.url
    event["RequestId"] = str(uuid.uuid4())
    return event


def test_create_upgrades_an_empty_database_using_the_secret(migrate: Any, response_sink: Any) -> None:
    module, _, url = migrate
    response_sink.received.clear()
    assert migrations.current_revision(url) is None

    result = module.handler(custom_resource_event("create", response_sink), context())

    (response,) = response_sink.received
    body = response["body"]
    assert body["Status"] == "SUCCESS", body["Reason"]
    assert result == {"Status": "SUCCESS", "PhysicalResourceId": body["PhysicalResourceId"]}
    assert migrations.current_revision(url) == migrations.head_revision()
    assert body["Data"]["Revision"] == migrations.head_revision()
    assert response["content_type"] == ""


def test_update_and_delete_leave_a_current_database_alone(migrate: Any, response_sink: Any) -> None:
    module, _, url = migrate
    module.handler(custom_resource_event("create", response_sink), context())
    response_sink.received.clear()

    module.handler(custom_resource_event("update", response_sink), context())
    module.handler(custom_resource_event("delete", response_sink), context())

    update, delete = (r["body"] for r in response_sink.received)
    head = migrations.head_revision()
    assert (update["Status"], delete["Status"]) == ("SUCCESS", "SUCCESS")
    assert update["Data"] == {"Revision": head, "PreviousRevision": head}
    # The same physical id as on Create: CloudFormation never sees a replacement.
    assert update["PhysicalResourceId"] == delete["PhysicalResourceId"] == "reservations-dev-DatabaseMigrations"
    assert migrations.current_revision(url) == head
    assert module.handler({"action": "migrate"}, context()) == {
        "revision": head,
        "previous_revision": head,
        "changed": False,
    }


def test_a_database_ahead_of_this_release_is_left_alone(migrate: Any, response_sink: Any) -> None:
    from sqlalchemy import create_engine, text

    module, _, url = migrate
    module.handler({"action": "migrate"}, context())
    engine = create_engine(url)
    with engine.begin() as connection:  # what a newer release's migration would leave behind
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    engine.dispose()
    response_sink.received.clear()

    module.handler(custom_resource_event("update", response_sink), context())

    (response,) = response_sink.received
    assert response["body"]["Status"] == "SUCCESS"  # rolling back to an older release must not fail
    assert response["body"]["Data"]["Revision"] == "f00dfeedbeef"
    assert migrations.current_revision(url) == "f00dfeedbeef"


def test_a_failed_migration_fails_the_deploy(
    migrate: Any, secrets_manager: Any, response_sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aws_lambda_powertools.utilities import parameters

    module, arn, url = migrate
    secrets_manager.put_secret_value(
        SecretId=arn, SecretString=json.dumps(rds_secret(url, dbname="no_such_database_for_reservations"))
    )
    parameters.clear_caches()
    response_sink.received.clear()

    result = module.handler(custom_resource_event("create", response_sink), context())

    (response,) = response_sink.received
    assert result["Status"] == response["body"]["Status"] == "FAILED"
    assert "no_such_database_for_reservations" in response["body"]["Reason"]
    assert response["body"]["PhysicalResourceId"]  # required even on a failed Create


def test_a_migration_that_runs_out_of_time_still_answers(
    migrate: Any, response_sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, _, _ = migrate
    monkeypatch.setattr(module, "TIMEOUT_MARGIN_SECONDS", 0.0)
    response_sink.received.clear()

    def migrations_outlasting_the_watchdog(*args: Any) -> dict[str, Any]:
        # Still "migrating" when the watchdog answers: returns only once its answer arrived,
        # so the outcome never depends on how fast this machine is.
        while not response_sink.received:
            time.sleep(0.05)
        return {"revision": "late", "previous_revision": None}

    monkeypatch.setattr(module, "run_migrations", migrations_outlasting_the_watchdog)

    result = module.handler(custom_resource_event("create", response_sink), context(seconds=1))

    # The watchdog answered FAILED before "Lambda" would stop the function; nothing after it.
    (response,) = response_sink.received
    assert result["Status"] == response["body"]["Status"] == "FAILED"
    assert "did not finish" in response["body"]["Reason"]


def test_responses_go_only_to_https_or_this_machine(migrate: Any) -> None:
    module, _, _ = migrate
    event = load_event("cfn-migrate-create.json") | {"ResponseURL": "http://example.com/response"}
    with pytest.raises(ValueError, match="refusing"):
        module.handler(event, context())


def test_create_admin_bootstraps_the_first_admin_only(migrate: Any, response_sink: Any) -> None:
    module, _, _ = migrate
    module.handler({"action": "migrate"}, context())

    created = module.handler(load_event("migrate-create-admin.json"), context())
    again = module.handler({"action": "create-admin", "email": "second@example.com", "password": "x" * 12}, context())

    assert created["status"] == "created" and created["email"] == "admin@example.com"
    assert len(created["password"]) >= 16  # generated, returned once
    assert again["status"] == "refused"
    with pytest.raises(module.InvalidRequest):
        module.handler({"action": "create-admin", "email": "not an address"}, context())
    with pytest.raises(module.InvalidRequest):
        module.handler({"action": "drop-everything"}, context())


def test_url_from_an_rds_secret_escapes_and_takes_the_proxy_host() -> None:
    secret = rds_secret("postgresql://u@db.internal:5433/app", password="p@ss:w/rd?#", username="app_user")
    url = url_from_rds_secret(secret, host="proxy.example.internal")
    parsed = make_url(url)
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
        "app_user",
        "p@ss:w/rd?#",
        "proxy.example.internal",
        5433,
        "app",
    )
    assert parsed.drivername == "postgresql+pg8000"
    with pytest.raises(ConfigurationError, match="password"):
        url_from_rds_secret({"username": "u", "host": "h"})


def test_secret_settings_imply_tls_unless_turned_off() -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db"
    assert load_settings(database_secret_arn=arn).database_uses_tls is True
    assert load_settings(database_secret_arn=arn, database_tls=False).database_uses_tls is False
    assert load_settings(database_tls=None).database_uses_tls is False
    plain = load_settings(database_url="postgresql://u@h/db", database_secret_arn="")
    assert plain.database_secret_arn is None
    assert database_url(plain) == "postgresql+pg8000://u@h/db"
