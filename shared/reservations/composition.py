"""The composition root: the only place that turns settings into resources (engine,
cache, hasher, token codec, mailer, policies, clock) and those into use cases.

Every Lambda function, the local CLI, the migrate and cache_sync functions, the tests
and the benches get their use cases from a `Container`. Resources are created lazily on
first use, so a cold start pays only for what its first request needs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from reservations.adapters.credentials import SECRET_CACHE_SECONDS, database_url, refresh_credentials_on_connect
from reservations.adapters.db import make_engine, read_only_session, unit_of_work
from reservations.adapters.mail import LOCAL_SENDER, LogMailer, Mailer, SesMailer
from reservations.adapters.security import PasswordHasher, SigningKeys, TokenCodec
from reservations.config import MIN_SECRET_LENGTH, ConfigurationError, Settings, settings_from_environment
from reservations.domain.accounts import AccountPolicy
from reservations.domain.policy import BookingPolicy
from reservations.domain.scheduling import DayStore, NoStore

if TYPE_CHECKING:
    from reservations.adapters.event_bus import EventSink
    from reservations.adapters.rate_limit import NoLimiter, RateLimiter
    from reservations.adapters.webhook_transport import WebhookTransport
    from reservations.usecases.accounts import AccountUseCases
    from reservations.usecases.audit import AuditUseCases
    from reservations.usecases.booking import BookingUseCases
    from reservations.usecases.events import EventUseCases
    from reservations.usecases.housekeeping import HousekeepingUseCases
    from reservations.usecases.integrations import IntegrationUseCases
    from reservations.usecases.privacy import PrivacyUseCases
    from reservations.usecases.schedule import ScheduleUseCases

logger = logging.getLogger("reservations.cache")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Container:
    """Resources and use cases of one process (a Lambda container, the CLI, a test)."""

    def __init__(self, settings: Settings | None = None, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings or settings_from_environment()
        self.clock = clock
        self._lock = threading.Lock()
        # Known to the SnapStart hooks, which every container registers with Lambda's runtime.
        from reservations.snapstart import track

        track(self)

    def now(self) -> datetime:
        return self.clock()

    def configure(self, **changes: Any) -> None:
        """Replace settings (tests change policies between requests); policies follow."""
        self.settings = self.settings.model_copy(update=changes)

    # --- resources ---------------------------------------------------------------------

    @cached_property
    def engine(self) -> Engine:
        with self._lock:
            engine = make_engine(
                database_url(self.settings),
                pool_size=self.settings.db_pool_size,
                connect_timeout=self.settings.db_connect_timeout_seconds,
                tls=self.settings.database_uses_tls,
                ping_after_idle_seconds=self.settings.db_ping_after_idle_seconds,
            )
            if self.settings.database_secret_arn:
                refresh_credentials_on_connect(engine, self.settings)
            return engine

    def unit_of_work(self) -> AbstractContextManager[Session]:
        return unit_of_work(self.engine)

    def read_only(self) -> AbstractContextManager[Session]:
        return read_only_session(self.engine)

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
            try:
                return SigningKeys.from_secret(str(secret), min_bytes=MIN_SECRET_LENGTH)
            except ValueError as error:
                raise ConfigurationError(f"JWT_SECRET_ARN: {error}") from None
        return self._local_keys

    @cached_property
    def _local_keys(self) -> SigningKeys:
        return SigningKeys.from_secret(self.settings.local_secret())

    @cached_property
    def mailer(self) -> Mailer:
        """SES when a sender is configured; locally also an .eml file per message."""
        ses: Mailer | None = None
        if self.settings.email_sender:
            import boto3

            client: Any = boto3.client("ses")
            ses = SesMailer(client, self.settings.email_sender)
        if self.settings.mail_directory:
            from pathlib import Path

            from reservations.adapters.mail import FileMailer

            return FileMailer(Path(self.settings.mail_directory), forward_to=ses)
        return ses or LogMailer()

    @cached_property
    def event_sink(self) -> EventSink:
        """The EventBridge bus when EVENT_BUS_NAME is set; otherwise the consumer itself."""
        from reservations.adapters.event_bus import EventBridgeSink, InProcessSink

        if self.settings.event_bus_name:
            import boto3
            from botocore.config import Config

            # Publishing after a write must not hold the response: short timeouts, one retry.
            config = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 2, "mode": "standard"})
            return EventBridgeSink(boto3.client("events", config=config), self.settings.event_bus_name)
        # Late-bound: the event use cases are built with this sink.
        return InProcessSink(lambda session, event: self.events.consume_in(session, event))  # noqa: PLW0108

    @cached_property
    def webhook_transport(self) -> WebhookTransport:
        from reservations.adapters.webhook_transport import WebhookTransport

        return WebhookTransport(
            require_https=self.settings.app_env == "aws",
            allow_private=self.settings.allows_private_webhooks,
            timeout_seconds=self.settings.webhook_timeout_seconds,
        )

    @cached_property
    def day_store(self) -> DayStore:
        """The Redis slot cache, or nothing when REDIS_URL is empty."""
        if not self.settings.cache_enabled:
            return NoStore()
        from reservations.adapters.slot_cache import SlotCache

        return SlotCache.from_url(
            self.settings.redis_url,
            ttl_seconds=self.settings.cache_expiry_seconds,
            on_open=self._redis_outage,
            credential_provider=self._redis_credentials(),
        )

    def _redis_credentials(self) -> Any:
        """The cache's ACL user from REDIS_SECRET_ARN (read when a connection opens)."""
        if not self.settings.redis_secret_arn:
            return None
        from reservations.adapters.credentials import RedisSecretCredentials

        return RedisSecretCredentials(self.settings.redis_secret_arn)

    @cached_property
    def rate_limiter(self) -> RateLimiter | NoLimiter:
        """Per-client limits in Redis; none without Redis (the Postgres lockout still holds)."""
        from reservations.adapters.rate_limit import NoLimiter, RateLimiter

        if not self.settings.cache_enabled:
            return NoLimiter()
        return RateLimiter(
            self.settings.redis_url, on_open=self._limiter_outage, credential_provider=self._redis_credentials()
        )

    def _limiter_outage(self, error: BaseException) -> None:
        from reservations.adapters.rate_limit import CIRCUIT_SECONDS

        logger.warning(
            "rate limiter unavailable (%s); allowing requests for %.0f s (the login lockout still holds)",
            type(error).__name__,
            CIRCUIT_SECONDS,
        )

    @property
    def account_policy(self) -> AccountPolicy:
        s = self.settings
        return AccountPolicy(
            access_ttl=timedelta(minutes=s.access_token_expire_minutes),
            refresh_ttl=timedelta(days=s.refresh_token_expire_days),
            login_max_failures=s.login_max_failures,
            login_lockout=timedelta(minutes=s.login_lockout_minutes),
            reset_ttl=timedelta(minutes=s.password_reset_expire_minutes),
            login_account_max_failures=s.login_account_max_failures,
            reset_cooldown=timedelta(minutes=s.password_reset_cooldown_minutes),
            mail_sender=s.email_sender or LOCAL_SENDER,
            reset_url=s.password_reset_url,
        )

    @property
    def booking_policy(self) -> BookingPolicy:
        s = self.settings
        return BookingPolicy(
            min_notice=timedelta(hours=s.min_booking_notice_hours),
            horizon=timedelta(days=s.max_booking_horizon_days),
            hold_ttl=timedelta(minutes=s.confirmation_grace_period_minutes),
            max_active_holds=s.max_active_holds,
            max_future_appointments=s.max_future_appointments_per_patient,
            require_verified_email=s.require_verified_email,
        )

    def metrics(self) -> Any:
        """A Powertools Metrics bound to the configured namespace and service."""
        from aws_lambda_powertools import Metrics

        return Metrics(
            namespace=self.settings.powertools_metrics_namespace, service=self.settings.powertools_service_name
        )

    def count(self, name: str, value: float = 1) -> None:
        """A business metric (EMF, flushed by the handler's Powertools wrapper); its only
        dimension is the service, never a user or provider id."""
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics().add_metric(name=name, unit=MetricUnit.Count, value=value)

    def _redis_outage(self, error: BaseException) -> None:
        """Once per circuit period: one warning and one metric, not one per request."""
        from aws_lambda_powertools.metrics import MetricUnit

        from reservations.adapters.slot_cache import CIRCUIT_SECONDS

        logger.warning(
            "Redis unavailable (%s: %s); serving from Postgres, next attempt in %.0f s",
            type(error).__name__,
            error,
            CIRCUIT_SECONDS,
        )
        self.metrics().add_metric(name="CacheUnavailable", unit=MetricUnit.Count, value=1)

    # --- use cases ---------------------------------------------------------------------

    @cached_property
    def accounts(self) -> AccountUseCases:
        # Imported on first use: a function loads only the use cases it serves.
        from reservations.usecases.accounts import AccountUseCases

        return AccountUseCases(self)

    @cached_property
    def booking(self) -> BookingUseCases:
        from reservations.usecases.booking import BookingUseCases

        return BookingUseCases(self)

    @cached_property
    def schedule(self) -> ScheduleUseCases:
        from reservations.usecases.schedule import ScheduleUseCases

        return ScheduleUseCases(self)

    @cached_property
    def housekeeping(self) -> HousekeepingUseCases:
        from reservations.usecases.housekeeping import HousekeepingUseCases

        return HousekeepingUseCases(self)

    @cached_property
    def events(self) -> EventUseCases:
        from reservations.usecases.events import EventUseCases

        return EventUseCases(self, sink=self.event_sink, transport=self.webhook_transport)

    @cached_property
    def integrations(self) -> IntegrationUseCases:
        from reservations.usecases.integrations import IntegrationUseCases

        return IntegrationUseCases(self)

    @cached_property
    def privacy(self) -> PrivacyUseCases:
        from reservations.usecases.privacy import PrivacyUseCases

        return PrivacyUseCases(self)

    @cached_property
    def audit(self) -> AuditUseCases:
        from reservations.usecases.audit import AuditUseCases

        return AuditUseCases(self)

    def publish_after_commit(self) -> None:
        self.events.publish_after_commit()

    # --- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Release pooled connections (a recycled container, the end of a test)."""
        engine = self.__dict__.pop("engine", None)
        if engine is not None:
            engine.dispose()

    def after_restore(self) -> None:
        """After a SnapStart restore (reservations.snapstart): forget the database
        connections and Redis clients made before the snapshot, without closing them (every
        environment restored from it holds the same sockets); the next use opens its own."""
        engine = self.__dict__.get("engine")
        if engine is not None:
            engine.dispose(close=False)
        for name in ("day_store", "rate_limiter"):
            self.__dict__.pop(name, None)
