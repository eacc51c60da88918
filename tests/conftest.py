"""Shared fixtures. Postgres and Redis are real servers: the local ones by default
(TEST_DATABASE_URL / TEST_REDIS_URL override), an embedded Postgres where none answers.
The suite creates its own database and drops it at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

# Cheap password hashing and no X-Ray in tests; set before any reservations import.
os.environ.update(
    APP_ENV="test",
    PASSWORD_HASH_TIME_COST="1",
    PASSWORD_HASH_MEMORY_KIB="1024",
    POWERTOOLS_TRACE_DISABLED="1",
    POWERTOOLS_METRICS_NAMESPACE="ReservationsTest",
    POWERTOOLS_SERVICE_NAME="reservations",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    JWT_SECRET_KEY="test-secret-key-that-is-long-enough-0123456789",
    # A Redis database of the suite's own, so tests never touch a developer's cache.
    REDIS_URL=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13"),
)
os.environ.pop("JWT_SECRET_ARN", None)
os.environ.pop("EMAIL_SENDER", None)

from hypothesis import settings as hypothesis_settings
from sqlalchemy.orm import Session

from reservations import migrations
from reservations.accounts import AccountService
from reservations.config import Settings, load_settings, normalise_database_url
from reservations.http.runtime import Runtime

REPO = Path(__file__).resolve().parents[1]

# On CI the property-based tests replay the same examples every run, so a landing never
# depends on luck; locally they keep exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")
DEFAULT_SERVER_URL = "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"


class Clock:
    """A controllable clock for services and runtimes."""

    def __init__(self, now: datetime | None = None) -> None:
        self.current = now or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    url = normalise_database_url(url)
    try:
        from reservations.local.embedded_postgres import ensure_postgres
    except ImportError:  # pragma: no cover - while the local package is being written
        return url
    return ensure_postgres(url, REPO / ".local" / "pgdata")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with migrations.scratch_database(_server_url(), "reservations_test") as url:
        os.environ["DATABASE_URL"] = url
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return load_settings(database_url=database_url, db_pool_size=10)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(settings: Settings, clock: Clock) -> Iterator[Runtime]:
    rt = Runtime(settings, clock=clock)
    yield rt
    if "engine" in rt.__dict__:
        rt.engine.dispose()


@pytest.fixture(scope="session")
def shared_engine(settings: Settings):  # type: ignore[no-untyped-def]
    from reservations.db import make_engine

    engine = make_engine(settings.database_url, pool_size=5)
    yield engine
    engine.dispose()


@pytest.fixture
def session(shared_engine) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    """A session inside a transaction that is rolled back after the test (no cleanup deletes)."""
    connection = shared_engine.connect()
    outer = connection.begin()
    db_session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield db_session
    db_session.close()
    outer.rollback()
    connection.close()


@pytest.fixture
def accounts(session: Session, runtime: Runtime, clock: Clock) -> AccountService:
    return runtime.accounts(session, clock())


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"
