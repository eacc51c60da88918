"""Process-wide resources of one function container, created lazily on first use so a
cold start pays only for what the request needs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from ..accounts import AccountPolicy, AccountService
from ..config import ConfigurationError, Settings, settings_from_environment
from ..db import make_engine, session_scope
from ..mail import LogMailer, Mailer, SesMailer
from ..scheduling import BookingPolicy, DayStore, NoStore
from ..security import PasswordHasher, SigningKeys, TokenCodec

SECRET_CACHE_SECONDS = 300


def utc_now() -> datetime:
    return datetime.now(UTC)


class Runtime:
    def __init__(self, settings: Settings | None = None, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings or settings_from_environment()
        self.clock = clock
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self.clock()

    @cached_property
    def engine(self) -> Engine:
        with self._lock:
            engine = make_engine(
                database_url(self.settings),
                pool_size=self.settings.db_pool_size,
                connect_timeout=self.settings.db_connect_timeout_seconds,
                tls=self.settings.database_uses_tls,
            )
            if self.settings.database_secret_arn:
                refresh_credentials_on_connect(engine, self.settings)
            return engine

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with session_scope(self.engine) as session:
            yield session

    @cached_property
    def hasher(self) -> PasswordHasher:
        return PasswordHasher(
            time_cost=self.settings.password_hash_time_cost, memory_kib=self.settings.password_hash_memory_kib
        )

    def token_codec(self) -> TokenCodec:
        return TokenCodec(self.signing_keys(), issuer=self.settings.jwt_issuer, audience=self.settings.jwt_audience)

    def signing_keys(self) -> SigningKeys:
        if self.settings.jwt_secret_arn:
            # Powertools caches the value, so a rotated secret is picked up within minutes.
            from aws_lambda_powertools.utilities import parameters

            secret = parameters.get_secret(self.settings.jwt_secret_arn, max_age=SECRET_CACHE_SECONDS)
            return SigningKeys.from_secret(str(secret))
        return self._local_keys

    @cached_property
    def _local_keys(self) -> SigningKeys:
        return SigningKeys.from_secret(self.settings.local_secret())

    @cached_property
    def mailer(self) -> Mailer:
        if not self.settings.email_sender:
            return LogMailer()
        import boto3

        client: Any = boto3.client("ses")
        return SesMailer(client, self.settings.email_sender)

    @cached_property
    def day_store(self) -> DayStore:
        """The Redis slot cache, or nothing when REDIS_URL is empty."""
        if not self.settings.cache_enabled:
            return NoStore()
        from ..slot_cache import SlotCache

        return SlotCache.from_url(
            self.settings.redis_url, ttl_seconds=self.settings.cache_expiry_seconds, on_open=_redis_outage
        )

    def accounts(self, session: Session, now: datetime | None = None) -> AccountService:
        return AccountService(
            session, hasher=self.hasher, codec=self.token_codec(), policy=self.account_policy, now=now or self.now()
        )

    @cached_property
    def account_policy(self) -> AccountPolicy:
        s = self.settings
        return AccountPolicy(
            access_ttl=timedelta(minutes=s.access_token_expire_minutes),
            refresh_ttl=timedelta(days=s.refresh_token_expire_days),
            login_max_failures=s.login_max_failures,
            login_lockout=timedelta(minutes=s.login_lockout_minutes),
            reset_ttl=timedelta(minutes=s.password_reset_expire_minutes),
        )


def url_from_rds_secret(secret: Mapping[str, Any], *, host: str | None = None) -> str:
    """The SQLAlchemy URL for a secret of the RDS shape (username, password, host, port,
    dbname); ``host`` overrides the secret's, e.g. with the RDS Proxy endpoint."""
    missing = [key for key in ("username", "password") if not secret.get(key)]
    if not (host or secret.get("host")):
        missing.append("host")
    if missing:
        raise ConfigurationError(f"DATABASE_SECRET_ARN: the secret has no {', '.join(missing)}")
    url = URL.create(
        "postgresql+pg8000",
        username=str(secret["username"]),
        password=str(secret["password"]),
        host=host or str(secret["host"]),
        port=int(secret.get("port") or 5432),
        database=str(secret.get("dbname") or "postgres"),
    )
    return url.render_as_string(hide_password=False)


def database_secret(settings: Settings) -> Mapping[str, Any]:
    """The DATABASE_SECRET_ARN secret as a mapping (Powertools caches it for a while)."""
    from aws_lambda_powertools.utilities import parameters

    assert settings.database_secret_arn
    value = parameters.get_secret(settings.database_secret_arn, transform="json", max_age=SECRET_CACHE_SECONDS)
    if not isinstance(value, Mapping):
        raise ConfigurationError("DATABASE_SECRET_ARN: the secret is not a JSON object of the RDS shape")
    return value


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or the URL built from the DATABASE_SECRET_ARN secret when one is set."""
    if not settings.database_secret_arn:
        return settings.database_url
    return url_from_rds_secret(database_secret(settings), host=settings.database_host)


def refresh_credentials_on_connect(engine: Engine, settings: Settings) -> None:
    """Take user and password from the (cached) secret for every new connection, so a
    rotated password is picked up without recycling the container."""

    @event.listens_for(engine, "do_connect")
    def _fresh_credentials(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        secret = database_secret(settings)
        cparams["user"] = str(secret["username"])
        cparams["password"] = str(secret["password"])


def booking_policy(settings: Settings) -> BookingPolicy:
    return BookingPolicy(
        min_notice=timedelta(hours=settings.min_booking_notice_hours),
        horizon=timedelta(days=settings.max_booking_horizon_days),
        hold_ttl=timedelta(minutes=settings.confirmation_grace_period_minutes),
        max_active_holds=settings.max_active_holds,
    )


def _redis_outage(error: BaseException) -> None:
    """Once per circuit period: one warning and one metric, not one per request."""
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    from ..slot_cache import CIRCUIT_SECONDS

    logging.getLogger("reservations.cache").warning(
        "Redis unavailable (%s: %s); serving from Postgres, next attempt in %.0f s",
        type(error).__name__,
        error,
        CIRCUIT_SECONDS,
    )
    Metrics().add_metric(name="CacheUnavailable", unit=MetricUnit.Count, value=1)
