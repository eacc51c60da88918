"""Shared fixtures. Postgres and Redis are real servers: the local Postgres by default
(TEST_DATABASE_URL overrides; an embedded one where none answers), in which the suite
creates its own database and drops it at the end, and a Redis server of the suite's own
(TEST_REDIS_URL overrides)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, suite_redis_url

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
    # The suite signs in thousands of times from one address; the rate-limit tests set
    # their own tight limits.
    RATE_LIMIT_PER_ADDRESS="100000/minute",
    RATE_LIMIT_PER_ACCOUNT="100000/minute",
    # Races reuse one patient over many rounds; the cap's own test sets it low.
    MAX_FUTURE_APPOINTMENTS_PER_PATIENT="1000",
    # A Redis of the suite's own, so tests never touch a developer's cache or another suite's.
    REDIS_URL=suite_redis_url(),
)
os.environ.pop("JWT_SECRET_ARN", None)
os.environ.pop("EMAIL_SENDER", None)

from hypothesis import settings as hypothesis_settings
from sqlalchemy.orm import Session

from reservations.composition import Container
from reservations.config import Settings, load_settings, normalise_database_url
from reservations.domain.accounts import AccountService
from reservations_dev import databases
from tests.builders import NOW, Clock, account_service, empty_tables, private_database
from tests.world import SyncWorld, World

REPO = Path(__file__).resolve().parents[1]

# On CI the property-based tests replay the same examples every run, so a landing never
# depends on luck; locally they keep exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")
DEFAULT_SERVER_URL = "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    url = normalise_database_url(url)
    try:
        from reservations_dev.embedded_postgres import ensure_postgres
    except ImportError:  # pragma: no cover - while the local package is being written
        return url
    return ensure_postgres(url, REPO / ".local" / "pgdata")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with databases.scratch_database(_server_url(), "reservations_test") as url:
        os.environ["DATABASE_URL"] = url
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return load_settings(database_url=database_url, db_pool_size=10)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def container(settings: Settings, clock: Clock) -> Iterator[Container]:
    """The composition root on the suite's database, on the test's clock."""
    created = Container(settings, clock=clock)
    yield created
    created.close()


@pytest.fixture(scope="session")
def shared_engine(settings: Settings):  # type: ignore[no-untyped-def]
    from reservations.adapters.db import make_engine

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
def accounts(session: Session, container: Container) -> AccountService:
    return account_service(container, session)


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    """The deployed functions, one container each (two for providers), on one clock at NOW."""
    created = World(Clock(NOW))
    yield created
    created.close()


# --- a database and a Redis of a module's own, for the whole-table sync pass -----------------


@pytest.fixture(scope="module")
def sync_database(database_url: str) -> Iterator[str]:
    with private_database(database_url, "sync") as url:
        yield url


@pytest.fixture(scope="module")
def sync_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def sync_world(settings: Settings, sync_database: str, sync_redis: RedisServer) -> Iterator[SyncWorld]:
    """Empty tables and an empty Redis of the module's own, a container on them at NOW."""
    empty_tables(sync_database)
    flusher = sync_redis.client()
    flusher.flushall()
    flusher.close()
    created = SyncWorld.on(settings, database_url=sync_database, redis=sync_redis)
    yield created
    created.close()
