"""The DML-only database role: the migrate function (connected as the owner) creates
the login of the ApiDatabaseSecretArn secret and grants it SELECT, INSERT, UPDATE and
DELETE - and nothing that could drop, truncate or reshape the schema.

The local Postgres trusts every local login, so the tests connect as the role by name
(the password only matters on RDS). Roles are cluster-wide: each test's role has a
random name and is dropped at the end; the tables live in a scratch database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

from tests.infra import test_migrate_handler as handler_tests
from tests.infra.test_migrate_handler import context, custom_resource_event, rds_secret

# The migrate function with the owner's secret (moto) on a scratch database.
migrate = handler_tests.migrate
secrets_manager = handler_tests.secrets_manager

INSUFFICIENT_PRIVILEGE = "42501"


@pytest.fixture
def api_role(migrate: Any, secrets_manager: Any) -> Iterator[tuple[str, str]]:
    """(role name, ARN of its RDS-shaped secret); the role is dropped afterwards."""
    _, _, url = migrate
    name = f"reservations_api_{uuid.uuid4().hex[:8]}"
    secret = rds_secret(url, username=name, password=f"pw-{uuid.uuid4().hex}'quote")
    arn = secrets_manager.create_secret(Name=f"reservations/test/api-{name}", SecretString=json.dumps(secret))["ARN"]
    yield name, arn
    owner = create_engine(url)
    try:
        with owner.begin() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first()
            if exists:
                # Privileges and default privileges in the scratch database, then the role.
                connection.exec_driver_sql(f'DROP OWNED BY "{name}"')
                connection.exec_driver_sql(f'DROP ROLE "{name}"')
    finally:
        owner.dispose()


def as_role(url: str, role: str) -> Engine:
    return create_engine(make_url(url).set(username=role, password=None))


def sqlstate(error: DBAPIError) -> str:
    return str(error.orig)


def refused(engine: Engine, statement: str) -> str:
    with pytest.raises(DBAPIError) as caught, engine.begin() as connection:
        connection.exec_driver_sql(statement)
    return sqlstate(caught.value)


def grant(module: Any, sink: Any, arn: str, kind: str = "create") -> dict[str, Any]:
    event = custom_resource_event(kind, sink)
    event["ResourceProperties"]["ApiDatabaseSecretArn"] = arn
    sink.received.clear()
    module.handler(event, context())
    (response,) = sink.received
    body: dict[str, Any] = response["body"]
    return body


def test_the_api_role_can_read_and_write_rows_but_not_change_the_schema(
    migrate: Any, api_role: tuple[str, str], response_sink: Any
) -> None:
    module, _, url = migrate
    role, arn = api_role

    body = grant(module, response_sink, arn)

    assert body["Status"] == "SUCCESS", body["Reason"]
    assert body["Data"]["ApiRole"] == role
    api = as_role(url, role)
    try:
        with api.begin() as connection:
            assert connection.execute(text("SELECT current_user")).scalar_one() == role
            user_id = connection.execute(
                text(
                    "INSERT INTO users (name, email, role, password_hash)"
                    " VALUES ('Dr Role', 'role@example.com', 'provider', 'x') RETURNING id"
                )
            ).scalar_one()
            connection.execute(text("UPDATE users SET name = 'Dr R' WHERE id = :id"), {"id": user_id})
            assert connection.execute(text("SELECT count(*) FROM appointments")).scalar_one() == 0
            connection.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})
            connection.execute(  # the audit trail takes new entries from the API
                text(
                    "INSERT INTO audit_log (at, actor_role, action, target_type) VALUES (now(), 'system', 't', 'user')"
                )
            )

        for statement in (
            "DROP TABLE appointments",
            "CREATE TABLE x (id int)",
            "TRUNCATE users",
            "ALTER TABLE users ADD COLUMN x int",
            "CREATE INDEX users_x ON users (name)",
            "UPDATE alembic_version SET version_num = 'x'",
            "UPDATE audit_log SET action = 'x'",
            "DELETE FROM audit_log",
            f"ALTER ROLE {role} CREATEDB",
        ):
            assert INSUFFICIENT_PRIVILEGE in refused(api, statement), statement
        with api.connect() as connection:  # read-only on Alembic's table
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        with api.connect() as connection:  # the hot paths' functions run with the role's own rights
            for call in (
                "SELECT listing_context(NULL, NULL, NULL, 0, NULL, current_date, current_date)",
                "SELECT reservation_context(0, 0, 'patient', 0, NULL)",
                "SELECT move_context(0, 0, 'patient', 0, NULL)",
                "SELECT count(*) FROM claim_unpublished(1, now())",
                "SELECT fan_out_event(gen_random_uuid(), 't', '{}', now(), NULL)",
            ):
                connection.execute(text(call))
            connection.rollback()
    finally:
        api.dispose()

    owner = create_engine(url)
    try:
        with owner.connect() as connection:
            attributes = connection.execute(
                text(
                    "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
                    " FROM pg_roles WHERE rolname = :n"
                ),
                {"n": role},
            ).one()
            owned = connection.execute(
                text("SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = :n)"),
                {"n": role},
            ).scalar_one()
            truncate = connection.execute(
                text(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
                    " AND has_table_privilege(:n, c.oid, 'TRUNCATE')"
                ),
                {"n": role},
            ).scalar_one()
    finally:
        owner.dispose()
    assert tuple(attributes) == (True, False, False, False, False, False)
    assert owned == 0
    assert truncate == 0


def test_grants_are_repeated_on_every_deploy_and_cover_later_tables(
    migrate: Any, api_role: tuple[str, str], response_sink: Any
) -> None:
    module, _, url = migrate
    role, arn = api_role
    assert grant(module, response_sink, arn)["Status"] == "SUCCESS"

    owner = create_engine(url)
    try:
        with owner.begin() as connection:
            # What a later migration does (as the owner); and a privilege granted by hand.
            connection.exec_driver_sql(
                "CREATE TABLE later_feature (id bigint GENERATED BY DEFAULT AS IDENTITY, v text)"
            )
            connection.exec_driver_sql(f"GRANT TRUNCATE ON users TO {role}")
    finally:
        owner.dispose()

    api = as_role(url, role)
    try:
        with api.begin() as connection:  # default privileges: no new grant needed
            connection.execute(text("INSERT INTO later_feature (v) VALUES ('ok')"))
            assert connection.execute(text("SELECT v FROM later_feature")).scalar_one() == "ok"

        body = grant(module, response_sink, arn, "update")  # the next deploy

        assert body["Status"] == "SUCCESS", body["Reason"]
        assert INSUFFICIENT_PRIVILEGE in refused(api, "TRUNCATE users")  # the extra grant is gone
        assert INSUFFICIENT_PRIVILEGE in refused(api, "DROP TABLE later_feature")
    finally:
        api.dispose()


@pytest.mark.parametrize(
    "changes",
    [{"username": "bad name; DROP TABLE users"}, {"username": "postgres"}, {"password": ""}],
    ids=["invalid-name", "the-owner", "no-password"],
)
def test_an_unusable_api_secret_fails_the_deploy(
    migrate: Any, secrets_manager: Any, response_sink: Any, changes: dict[str, Any]
) -> None:
    module, _, url = migrate
    owner = make_url(url).username or "postgres"
    if changes.get("username") == "postgres":
        changes = {"username": owner}
    secret = rds_secret(url, **({"username": "reservations_api_unused", "password": "pw"} | changes))
    arn = secrets_manager.create_secret(
        Name=f"reservations/test/bad-{uuid.uuid4().hex[:6]}", SecretString=json.dumps(secret)
    )["ARN"]

    body = grant(module, response_sink, arn)

    assert body["Status"] == "FAILED"
    assert "ApiDatabaseSecretArn" in body["Reason"]
