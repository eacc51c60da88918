"""Process-wide resources of one function container, created lazily on first use so a
cold start pays only for what the request needs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ..accounts import AccountPolicy, AccountService
from ..config import Settings, settings_from_environment
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
            return make_engine(
                self.settings.database_url,
                pool_size=self.settings.db_pool_size,
                connect_timeout=self.settings.db_connect_timeout_seconds,
                tls=self.settings.database_tls,
            )

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
