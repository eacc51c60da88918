"""Command line for local use: `python -m reservations_dev {dev,migrate,create-admin,sync}`.

In local mode (APP_ENV=local, the default) every command falls back to an embedded
Postgres under `.local/` when DATABASE_URL does not answer, so a bare machine works.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_DATA_DIR = REPO_ROOT / ".local" / "pgdata"
logger = logging.getLogger("reservations")


def _prepare_database() -> str:
    """Resolve the database (embedded fallback in local mode), create it, migrate it."""
    from reservations import migrations
    from reservations.config import settings_from_environment

    settings = settings_from_environment()
    url = settings.database_url
    if settings.app_env == "local":
        from reservations_dev.embedded_postgres import ensure_postgres

        url = ensure_postgres(url, EMBEDDED_DATA_DIR)
        if url != settings.database_url:
            os.environ["DATABASE_URL"] = url
            settings_from_environment.cache_clear()
    if migrations.create_database_if_missing(url):
        print(f"created database {url.rsplit('/', 1)[-1].split('?')[0]}")
    migrations.upgrade(url)
    return url


def _check_redis() -> None:
    """No Redis: run without the cache and say so once, instead of once per request."""
    from reservations.config import settings_from_environment

    settings = settings_from_environment()
    if not settings.cache_enabled:
        return
    import redis

    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except (redis.RedisError, OSError) as error:
        logger.warning("Redis at %s is unreachable (%s): running without the slot cache", settings.redis_url, error)
        os.environ["REDIS_URL"] = ""
        settings_from_environment.cache_clear()


def cmd_migrate(_: argparse.Namespace) -> int:
    _prepare_database()
    print("database is at the latest revision")
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from pydantic import EmailStr, TypeAdapter, ValidationError

    from reservations.composition import Container
    from reservations.domain.errors import DomainError

    try:
        email = TypeAdapter(EmailStr).validate_python(args.email)
    except ValidationError:
        print(f"error: '{args.email}' is not a valid e-mail address", file=sys.stderr)
        return 2
    _prepare_database()
    container = Container()
    try:
        user = container.accounts.create_first_admin(name=args.name, email=str(email), password=args.password)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    finally:
        container.close()
    print(f"created admin {user.email} (id {user.id})")
    return 0


def cmd_sync(_: argparse.Namespace) -> int:
    from reservations_dev.events import scheduled_event
    from reservations_dev.harness import invoke
    from reservations_dev.template import load_schedules

    _prepare_database()
    _check_redis()
    schedules = [s for s in load_schedules(REPO_ROOT / "template.yaml") if s.function_name == "CacheSyncFunction"]
    if not schedules:
        print("error: template.yaml declares no scheduled CacheSyncFunction", file=sys.stderr)
        return 1
    print(json.dumps(invoke(schedules[0], scheduled_event(schedules[0])), indent=2))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from reservations_dev.server import scheduled_tasks, serve

    os.environ.setdefault("DB_POOL_SIZE", "10")
    _prepare_database()
    _check_redis()
    template = REPO_ROOT / "template.yaml"
    # The events function's dispatch pass (outbox, webhooks, mail, reminders) runs every
    # LOCAL_DISPATCH_SECONDS, so a change's webhooks and mail go out within seconds.
    dispatch_every = float(os.environ.get("LOCAL_DISPATCH_SECONDS", "2"))
    tasks = scheduled_tasks(template, intervals={"EventsFunction": dispatch_every})
    serve(template, host=args.host, port=args.port, background_tasks=tasks)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("pgserver", "alembic.runtime.plugins"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # Local runs: no X-Ray daemon, human-readable Powertools output.
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    # Locally there is no CloudWatch to receive metrics: don't print EMF blobs per request.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    parser = argparse.ArgumentParser(prog="python -m reservations_dev")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create the database if needed and apply migrations").set_defaults(
        run=cmd_migrate
    )
    admin = commands.add_parser("create-admin", help="create an admin account (the only way to get the first)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.add_argument("--name", default="Administrator")
    admin.set_defaults(run=cmd_create_admin)
    commands.add_parser("sync", help="run one cache/DB sync pass (what the schedule runs)").set_defaults(run=cmd_sync)
    dev = commands.add_parser("dev", help="serve the API locally through the real Lambda handlers")
    dev.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    dev.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    dev.set_defaults(run=cmd_dev)
    args = parser.parse_args(argv)
    from reservations.config import ConfigurationError

    try:
        return int(args.run(args))
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
