"""Command line: `python -m reservations {dev,migrate,create-admin}`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _prepare_database(database_url: str) -> None:
    from . import migrations

    if migrations.create_database_if_missing(database_url):
        print(f"created database {database_url.rsplit('/', 1)[-1].split('?')[0]}")
    migrations.upgrade(database_url)


def cmd_migrate(_: argparse.Namespace) -> int:
    from .config import settings_from_environment

    settings = settings_from_environment()
    _prepare_database(settings.database_url)
    print("database is at the latest revision")
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter, ValidationError
    from pydantic import EmailStr

    from .errors import DomainError
    from .http.runtime import Runtime

    try:
        email = TypeAdapter(EmailStr).validate_python(args.email)
    except ValidationError:
        print(f"error: '{args.email}' is not a valid e-mail address", file=sys.stderr)
        return 2
    runtime = Runtime()
    _prepare_database(runtime.settings.database_url)
    from .accounts import AccountService

    try:
        with runtime.transaction() as session:
            service = AccountService(
                session, hasher=runtime.hasher, codec=runtime.token_codec(), policy=runtime.account_policy,
                now=runtime.now(),
            )
            user = service.create_first_admin(name=args.name, email=str(email), password=args.password)
            print(f"created admin {user.email} (id {user.id})")
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from .config import settings_from_environment
    from .local.embedded_postgres import ensure_postgres

    os.environ.setdefault("APP_ENV", "local")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    os.environ.setdefault("POWERTOOLS_DEV", "1")
    os.environ.setdefault("DB_POOL_SIZE", "10")
    settings = settings_from_environment()
    database_url = ensure_postgres(settings.database_url, REPO_ROOT / ".local" / "pgdata")
    if database_url != settings.database_url:
        os.environ["DATABASE_URL"] = database_url
        settings_from_environment.cache_clear()
    _prepare_database(database_url)
    from .local.gateway import serve

    serve(REPO_ROOT / "template.yaml", host=args.host, port=args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reservations")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create the database if needed and apply migrations").set_defaults(
        run=cmd_migrate
    )
    admin = commands.add_parser("create-admin", help="create an admin account (the only way to get the first)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.add_argument("--name", default="Administrator")
    admin.set_defaults(run=cmd_create_admin)
    dev = commands.add_parser("dev", help="serve the API locally through the real Lambda handlers")
    dev.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    dev.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    dev.set_defaults(run=cmd_dev)
    args = parser.parse_args(argv)
    from .config import ConfigurationError

    try:
        return int(args.run(args))
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
