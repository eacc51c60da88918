"""migrate function: applies the Alembic migrations shipped in the shared layer.

Three ways in:

* CloudFormation, as the ``DatabaseMigrations`` custom resource of template.yaml, on
  every deploy that changes the shared layer (where the migrations live): Create and
  Update run ``upgrade head`` (a no-op on a current database, and safe to repeat: a
  Postgres advisory lock serialises concurrent runs), Delete does nothing (removing a
  stack never drops its data). The outcome is PUT to CloudFormation's pre-signed
  ``ResponseURL``; a failure fails, and so rolls back, the deploy. After the upgrade,
  when the resource names an ``ApiDatabaseSecretArn``, the DML-only login of that secret
  (RDS shape) is created, or its password set, and granted SELECT, INSERT, UPDATE and
  DELETE on every table (today's and, through default privileges, future ones): the
  other functions connect as it; this one alone connects as the owner.
* ``{"action": "migrate"}`` invoked directly (``sam remote invoke MigrateFunction``):
  the same upgrade (and grants, given ``"api_database_secret_arn"``), result returned.
* ``{"action": "create-admin", "email": ..., "name": ..., "password": ...}``: bootstraps
  the first admin of a new stack (refused once an admin exists; later admins are created
  through ``POST /register`` by an admin). Without ``password`` a strong one is generated
  and returned once.

Why a hand-written cfn-response: Powertools for Python has no custom-resource helper,
AWS's ``cfnresponse`` module only exists for inline (ZipFile) code, and crhelper would
add a dependency for what is one HTTPS PUT; the standard library's urllib does it, and
this module guarantees exactly one response even when the function is about to time
out (otherwise CloudFormation waits for its own timeout before rolling back).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger
from sqlalchemy import event
from sqlalchemy.engine import Engine

from reservations import migrations
from reservations.config import Settings, settings_from_environment

# The service name comes from POWERTOOLS_SERVICE_NAME; settings are read per request, so a
# bad variable fails the request (and CloudFormation hears of it), not the cold start.
logger = Logger()

# CloudFormation reads at most 4 KiB of response; the reason is what people see.
MAX_REASON_CHARS = 1000
# Answer FAILED this long before Lambda would stop the function.
TIMEOUT_MARGIN_SECONDS = 10.0
RESPONSE_ATTEMPTS = 4
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# What the data stack's ApiDatabaseUsername allows; it is also quoted, belt and braces.
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# The DML-only role's privileges: no TRUNCATE, REFERENCES, TRIGGER, DDL or ownership.
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


class InvalidRequest(ValueError):
    """The direct invocation's payload is not one this function understands."""


# --------------------------------------------------------------------------- migrations


@contextmanager
def connection_options(settings: Settings) -> Iterator[None]:
    """Connect timeout and verified TLS for every engine created inside the block.

    Alembic's env.py builds its own engine from the URL, so the options go in through
    SQLAlchemy's ``do_connect`` event (on the Engine class: it covers that engine too).
    pg8000's default is unverified, opportunistic TLS; RDS Proxy's certificate comes
    from a public CA, so the default verifying context checks it.
    """

    def _options(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams.setdefault("timeout", settings.db_connect_timeout_seconds)
        if settings.database_uses_tls:
            cparams["ssl_context"] = ssl.create_default_context()

    event.listen(Engine, "do_connect", _options)
    try:
        yield
    finally:
        event.remove(Engine, "do_connect", _options)


def known_revision(revision: str) -> bool:
    """Whether this release's migrations contain ``revision``."""
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    try:
        return ScriptDirectory(str(migrations.SCRIPT_LOCATION)).get_revision(revision) is not None
    except CommandError:
        return False


def run_migrations(api_secret_arn: str | None = None) -> dict[str, Any]:
    """Upgrade the configured database to the newest revision, then (given the secret of
    the DML-only role) create and grant that role; idempotent."""
    from reservations.adapters.credentials import database_url

    settings = settings_from_environment()
    url = database_url(settings)
    with connection_options(settings):
        before = migrations.current_revision(url)
        if before is not None and not known_revision(before):
            # A newer release migrated this database and an older one is being deployed
            # (a rollback). Migrations only expand the schema, so the older code runs on
            # it; failing here would make the rollback itself fail.
            logger.warning("database is ahead of this release; left as it is", extra={"revision": before})
            outcome: dict[str, Any] = {"revision": before, "previous_revision": before, "changed": False}
        else:
            migrations.upgrade(url)
            after = migrations.current_revision(url)
            if after != migrations.head_revision():
                raise RuntimeError(
                    f"database is at {after!r} after the upgrade, expected {migrations.head_revision()!r}"
                )
            logger.info("database migrated", extra={"previous_revision": before, "revision": after})
            outcome = {"revision": after, "previous_revision": before, "changed": before != after}
        if api_secret_arn:
            outcome["api_role"] = grant_api_role(url, read_secret(api_secret_arn))
    return outcome


# --------------------------------------------------------------------------- the DML-only role


def read_secret(arn: str) -> Mapping[str, Any]:
    """A JSON secret, fetched afresh (a rotated password must reach the role at once)."""
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(arn, transform="json", force_fetch=True)
    if not isinstance(value, Mapping):
        raise ValueError("ApiDatabaseSecretArn: the secret is not a JSON object of the RDS shape")
    return value


def grant_api_role(url: str, secret: Mapping[str, Any]) -> str:
    """Create the secret's login (or set its password) and grant it DML on every table.

    Runs as the owner, which creates every table (so ALTER DEFAULT PRIVILEGES, for the
    current role, covers the tables of later migrations too). Privileges beyond DML that
    the role may have been given by hand are revoked first; all in one transaction. The
    role is never made superuser, CREATEROLE or the like, and a role that is one is
    refused. The password is a literal (DDL takes no bind parameters): quotes doubled,
    and the data stack generates it without quotes or backslashes anyway.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    username = str(secret.get("username") or "")
    password = str(secret.get("password") or "")
    if not ROLE_NAME.fullmatch(username):
        raise ValueError(f"ApiDatabaseSecretArn: {username!r} is not a valid role name ([a-z_][a-z0-9_]*)")
    if not password:
        raise ValueError("ApiDatabaseSecretArn: the secret has no password")

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            owner, database = connection.execute(text("SELECT current_user, current_database()")).one()
            if username == owner:
                raise ValueError("ApiDatabaseSecretArn names the owner: the API role must be another login")
            preparer = connection.dialect.identifier_preparer
            role = preparer.quote_identifier(username)
            existing = connection.execute(
                text(
                    "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls"
                    " FROM pg_roles WHERE rolname = :name"
                ),
                {"name": username},
            ).first()
            if existing is not None and existing[0]:
                raise ValueError(f"role {username!r} has administrative attributes: refusing to use it for the API")
            literal = "'" + password.replace("'", "''") + "'"
            # CREATE's defaults are NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
            # NOBYPASSRLS; ALTER names none (a non-superuser owner may not).
            verb = "ALTER" if existing is not None else "CREATE"
            connection.exec_driver_sql(f"{verb} ROLE {role} WITH LOGIN PASSWORD {literal}")
            statements = [
                f"GRANT CONNECT ON DATABASE {preparer.quote_identifier(database)} TO {role}",
                f"GRANT USAGE ON SCHEMA public TO {role}",
                f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
                f"GRANT {TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA public TO {role}",
                # Alembic's bookkeeping: readable, never writable by the API.
                f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {role}",
                # The audit trail is append-only: the API writes entries, never changes them.
                f"REVOKE UPDATE, DELETE ON audit_log FROM {role}",
                f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {TABLE_PRIVILEGES} ON TABLES TO {role}",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
            ]
            for statement in statements:
                connection.exec_driver_sql(statement)
            # PostgreSQL 15+ (Aurora 16 included) gives PUBLIC no CREATE on schema public;
            # a database upgraded from an older major version may still do so.
            can_create = text("SELECT has_schema_privilege(:name, 'public', 'CREATE')")
            if connection.execute(can_create, {"name": username}).scalar_one():
                connection.exec_driver_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
                if connection.execute(can_create, {"name": username}).scalar_one():
                    raise RuntimeError(f"role {username!r} may still CREATE in schema public")
    finally:
        engine.dispose()
    logger.info("API database role granted", extra={"role": username, "role_created": verb == "CREATE"})
    return username


def create_first_admin(payload: dict[str, Any]) -> dict[str, Any]:
    """Create the first admin account; refused when one exists already (the same use
    case, and so the same rule, as `make create-admin`)."""
    from pydantic import EmailStr, TypeAdapter, ValidationError

    from reservations.composition import Container
    from reservations.domain.errors import DomainError

    try:
        email = str(TypeAdapter(EmailStr).validate_python(payload.get("email")))
    except ValidationError:
        raise InvalidRequest("create-admin needs a valid 'email'") from None
    name = str(payload.get("name") or "Administrator")
    password = payload.get("password")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(18)

    container = Container()
    try:
        user = container.accounts.create_first_admin(name=name, email=email, password=str(password))
    except DomainError as error:
        if error.code == "admin_exists":
            return {"status": "refused", "reason": error.message}
        return {"status": "error", "code": error.code, "reason": error.message}
    finally:
        container.close()
    result: dict[str, Any] = {"status": "created", "id": user.id, "email": user.email}
    if generated:
        result["password"] = password
        result["note"] = "generated once and not stored: sign in and change it with POST /reset-password"
    logger.info("first admin created", extra={"user_id": result["id"]})
    return result


# --------------------------------------------------------------------------- cfn-response


class CloudFormationResponse:
    """Sends the one response a custom-resource request expects, whatever happens."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self._lock = threading.Lock()
        self.sent: str | None = None
        url = urlsplit(str(request["ResponseURL"]))
        # Pre-signed S3 URLs are https; plain http only to this machine (tests).
        if not (url.scheme == "https" or (url.scheme == "http" and url.hostname in LOOPBACK_HOSTS)):
            raise ValueError(f"refusing to send the response to {url.scheme}://{url.hostname}")

    @property
    def physical_resource_id(self) -> str:
        existing = self.request.get("PhysicalResourceId")
        if existing:
            return str(existing)
        # Stable across updates, so CloudFormation never "replaces" (deletes) it.
        stack_name = str(self.request.get("StackId", "stack/unknown")).split("/")[1]
        return f"{stack_name}-{self.request.get('LogicalResourceId', 'DatabaseMigrations')}"

    def send(self, status: str, *, reason: str = "", data: dict[str, Any] | None = None) -> bool:
        """PUT the response; False if one was sent already (e.g. by the timeout)."""
        with self._lock:
            if self.sent is not None:
                return False
            self.sent = status
            body = json.dumps(
                {
                    "Status": status,
                    "Reason": (reason or f"see log stream {self._log_stream()}")[:MAX_REASON_CHARS],
                    "PhysicalResourceId": self.physical_resource_id,
                    "StackId": self.request["StackId"],
                    "RequestId": self.request["RequestId"],
                    "LogicalResourceId": self.request["LogicalResourceId"],
                    "NoEcho": False,
                    "Data": {key: "" if value is None else str(value) for key, value in (data or {}).items()},
                }
            ).encode()
            self._put(body)
            return True

    def _put(self, body: bytes) -> None:
        # The pre-signed URL was signed for an empty content type.
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            str(self.request["ResponseURL"]),
            data=body,
            method="PUT",
            headers={"Content-Type": "", "Content-Length": str(len(body))},
        )
        for attempt in range(1, RESPONSE_ATTEMPTS + 1):
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
                    logger.info("CloudFormation response sent", extra={"http_status": reply.status})
                    return
            except (urllib.error.URLError, TimeoutError) as error:
                logger.warning(
                    "sending the CloudFormation response failed", extra={"attempt": attempt, "error": str(error)}
                )
                if attempt == RESPONSE_ATTEMPTS:
                    raise
                time.sleep(2 ** (attempt - 1))

    @staticmethod
    def _log_stream() -> str:
        return os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "of the migrate function")


def custom_resource(request: dict[str, Any], context: Any) -> dict[str, Any]:
    response = CloudFormationResponse(request)
    request_type = request.get("RequestType")
    logger.append_keys(request_type=request_type, stack_id=request.get("StackId"))

    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 900.0
    watchdog = threading.Timer(
        max(remaining - TIMEOUT_MARGIN_SECONDS, 1.0),
        lambda: response.send("FAILED", reason=f"migrations did not finish within the function's {remaining:.0f} s"),
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        if request_type in ("Create", "Update"):
            properties = request.get("ResourceProperties") or {}
            outcome = run_migrations(str(properties.get("ApiDatabaseSecretArn") or "") or None)
            data = {"Revision": outcome["revision"], "PreviousRevision": outcome["previous_revision"]}
            if "api_role" in outcome:
                data["ApiRole"] = outcome["api_role"]
            response.send("SUCCESS", reason=f"database at revision {outcome['revision']}", data=data)
        elif request_type == "Delete":
            # Data outlives stacks: deleting the stack (or a rollback of its creation) keeps the schema.
            response.send("SUCCESS", reason="nothing to do: the database is left as it is")
        else:
            response.send("FAILED", reason=f"unknown RequestType {request_type!r}")
    except Exception as error:
        logger.exception("migration failed")
        response.send("FAILED", reason=f"migration failed: {type(error).__name__}: {error}")
    finally:
        watchdog.cancel()
    return {"Status": response.sent, "PhysicalResourceId": response.physical_resource_id}


# --------------------------------------------------------------------------- entry point


@logger.inject_lambda_context(log_event=False, clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # Never log the event: a create-admin payload may carry a password.
    if "RequestType" in event and "ResponseURL" in event:
        return custom_resource(event, context)
    action = event.get("action", "migrate")
    if action == "migrate":
        return run_migrations(str(event.get("api_database_secret_arn") or "") or None)
    if action == "create-admin":
        return create_first_admin(event)
    raise InvalidRequest(f"unknown action {action!r}: use 'migrate' or 'create-admin'")
