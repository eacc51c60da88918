"""Engine, session scope and table models: the only module that knows the schema.

One small pool per process: a Lambda container serves one request at a time and sits
behind RDS Proxy, so `pool_size=1` by default; the local gateway raises it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from reservations.domain.errors import DomainError

ROLES = ("patient", "provider", "admin")


def make_engine(
    url: str,
    *,
    pool_size: int = 1,
    connect_timeout: float = 5.0,
    tls: bool = False,
    ping_after_idle_seconds: float = 5.0,
) -> Engine:
    connect_args: dict[str, Any] = {"timeout": connect_timeout}
    if tls:
        # pg8000 does not verify unless given a context; RDS certificates chain to the system store.
        connect_args["ssl_context"] = ssl.create_default_context()
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=30,
        connect_args=connect_args,
        # A failed statement's error must not carry its parameters (e-mails, hashes) into logs.
        hide_parameters=True,
    )
    if engine.dialect.driver == "pg8000":
        _pipeline_statements(engine)
    _ping_after_idle(engine, ping_after_idle_seconds)
    _treat_cut_connections_as_disconnects(engine)
    return engine


def _pipeline_statements(engine: Engine) -> None:
    """Connect with pg_pipeline's connection: one round trip per statement, not three."""
    from reservations.adapters import pg_pipeline

    @event.listens_for(engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        return pg_pipeline.connect(*cargs, **cparams)


# Server states after which the session is gone: 57P01-57P03 (terminated by an admin, crash,
# cannot connect now) and class 08 (connection exceptions).
DISCONNECT_STATES = ("57P", "08")


def _treat_cut_connections_as_disconnects(engine: Engine) -> None:
    """SQLAlchemy's pg8000 dialect recognises only its "network error" message as a
    disconnect. A cut socket can also surface bare (ConnectionResetError, BrokenPipeError),
    or as the server's "terminating connection" error; unrecognised, the dead connection
    went back to the pool and failed the next request too. Marked here, it is invalidated
    with the pool's other connections, so only the request that met the cut fails."""

    @event.listens_for(engine, "handle_error")
    def mark_disconnect(context: Any) -> None:
        wrapped = context.sqlalchemy_exception
        code = (sqlstate(wrapped) if isinstance(wrapped, DBAPIError) else None) or ""
        if isinstance(context.original_exception, OSError) or code.startswith(DISCONNECT_STATES):
            context.is_disconnect = True


# Where a pooled connection remembers when it was last returned (the pool record's info).
LAST_USED = "reservations_last_used"


def _ping_after_idle(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's pool_pre_ping costs a `SELECT 1` round trip on every checkout; a
    connection used a moment ago is almost never dead. So only a connection idle longer
    than ``idle_seconds`` (a Lambda container thawed after a pause, say) is pinged, and
    replaced if dead; a connection cut while in use fails that one request (503) and is
    replaced on the next. Wall-clock time, not monotonic: a frozen container's monotonic
    clock may not advance while it sleeps."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def stamp(dbapi_connection: Any, record: Any) -> None:
        record.info[LAST_USED] = time.time()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        last_used = record.info.get(LAST_USED)
        if last_used is None or time.time() - last_used < idle_seconds:
            return  # fresh from connect, or used a moment ago
        try:
            alive = bool(dialect.do_ping(dbapi_connection))
        except dialect.loaded_dbapi.Error as error:
            alive = not dialect.is_disconnect(error, dbapi_connection, None)
            if alive:
                raise
        except OSError:
            # pg8000 sometimes lets a reset socket surface as a bare OSError
            # (ConnectionResetError, BrokenPipeError) rather than a DBAPI error.
            alive = False
        if not alive:
            record.info.pop(LAST_USED, None)
            raise DisconnectionError("an idle pooled connection was dead; reconnecting")


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """One transaction, and the only place that commits: on success, or on a domain error
    whose preceding writes are part of its outcome (``keep_changes``); any other
    exception rolls back."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
        except DomainError as error:
            if error.keep_changes:
                session.commit()
            else:
                session.rollback()
            raise
        except BaseException:
            session.rollback()
            raise
        session.commit()


@contextmanager
def read_only_session(engine: Engine) -> Iterator[Session]:
    """Reads without a transaction: the connection runs in autocommit while the block
    lasts, so no BEGIN or COMMIT round trips; each statement sees what was committed
    when it began, as under READ COMMITTED. Only for blocks that never write."""
    with engine.connect() as connection:
        driver: Any = connection.connection.driver_connection
        driver.autocommit = True
        try:
            with Session(bind=connection, expire_on_commit=False) as session:
                yield session
        finally:
            driver.autocommit = False  # the pool's next user gets a transactional connection


def sqlstate(error: DBAPIError) -> str | None:
    """The SQLSTATE of a driver error (pg8000 puts the server's fields in args[0])."""
    details = error.orig.args[0] if error.orig is not None and error.orig.args else None
    if isinstance(details, dict):
        code = details.get("C")
        return str(code) if code else None
    return getattr(error.orig, "sqlstate", None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        Index("users_email_lower_key", func.lower(text("email")), unique=True),
        CheckConstraint(f"role IN {ROLES!r}", name="users_role_check"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    token_version: Mapped[int] = mapped_column(Integer, server_default="0")
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    slots_version: Mapped[int] = mapped_column(BigInteger, server_default=text("(floor(random() * 1e15))::bigint"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Providers' profile and booking rules (NULL: the deployment's default; for the cap: none).
    specialty: Mapped[str | None] = mapped_column(String(80))
    bio: Mapped[str | None] = mapped_column(Text)
    min_notice_hours: Mapped[float | None] = mapped_column(Double)
    horizon_days: Mapped[int | None] = mapped_column(Integer)
    cancellation_notice_hours: Mapped[float | None] = mapped_column(Double)
    max_appointments_per_day: Mapped[int | None] = mapped_column(Integer)
    # Notifications (security mail is sent regardless) and the calendar feed's token, hashed.
    notify_email: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    calendar_feed_hash: Mapped[str | None] = mapped_column(String(64))
    email_verified: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class VisitType(Base):
    """What a provider offers: a duration and the buffers kept free around it. Every
    provider has one default type (15 minutes, no buffers) that cannot be removed."""

    __tablename__ = "visit_types"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    duration_minutes: Mapped[int] = mapped_column(Integer)
    buffer_before_minutes: Mapped[int] = mapped_column(Integer, server_default="0")
    buffer_after_minutes: Mapped[int] = mapped_column(Integer, server_default="0")
    description: Mapped[str | None] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    is_default: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SlotDayVersion(Base):
    """The version of one provider-local day's free slots, bumped in the same transaction
    as every write that can change that day; cached days carry it in their tag."""

    __tablename__ = "slot_day_versions"

    provider_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class RefreshToken(Base):
    """Opaque rotating refresh tokens, stored hashed; a family is revoked on reuse."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    token_version: Mapped[int] = mapped_column(Integer)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PasswordResetToken(Base):
    __tablename__ = "password_reset_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginFailure(Base):
    """Failed password attempts per e-mail (known or not), for the lockout window."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email_key: Mapped[str] = mapped_column(String(320))
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # API Gateway's source address: the lockout is per (account, address).
    source_ip: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("login_failures_email_time", "email_key", "failed_at"),)


class AvailabilityPeriod(Base):
    """Weekly hours valid over a date range; windows as JSON [{days, start, end}]."""

    __tablename__ = "availability_periods"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    windows: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class AvailabilityDay(Base):
    """A dated override: `exception` replaces the weekly hours, `manual` adds to them."""

    __tablename__ = "availability_days"
    __table_args__ = (CheckConstraint("kind IN ('exception', 'manual')", name="availability_days_kind_check"),)

    provider_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    windows: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class Appointment(Base):
    """A hold or a booking. Overlaps are forbidden by exclusion constraints (migration 0001)."""

    __tablename__ = "appointments"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    visit_type_id: Mapped[int] = mapped_column(ForeignKey("visit_types.id"))
    # The range kept free for it, buffers included: the provider's exclusion constraint
    # covers this range, the patient's covers [start_time, end_time).
    busy_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    busy_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancellation_reason: Mapped[str | None] = mapped_column(String(500))
    cancelled_by: Mapped[str | None] = mapped_column(String(16))
    rescheduled_from: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    rescheduled_to: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    note: Mapped[str | None] = mapped_column(String(500))


class AppointmentHistory(Base):
    """One transition of an appointment (creation: from None), append-only."""

    __tablename__ = "appointment_history"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_role: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Carried to the audit entry by the insert trigger, never stored (migration 0009).
    source_ip: Mapped[str | None] = mapped_column(String(64))


class IdempotencyRecord(Base):
    """A stored response for an `Idempotency-Key`, scoped to the user, kept 24 h."""

    __tablename__ = "idempotency_records"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    operation: Mapped[str] = mapped_column(String(32))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxEvent(Base):
    """An event committed with the change it describes, waiting for (or sent to) the bus.
    Appointment events are written by a trigger on appointment_history (migration 0005)."""

    __tablename__ = "outbox_events"

    id: Mapped[Any] = mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))
    position: Mapped[int] = mapped_column(BigInteger, Identity(always=True))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    appointment_id: Mapped[int | None] = mapped_column(BigInteger)
    sequence: Mapped[int | None] = mapped_column(Integer)
    provider_id: Mapped[int | None] = mapped_column(BigInteger)
    patient_id: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    description: Mapped[str | None] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One event for one endpoint: attempted until it succeeds or its attempts run out."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[Any] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    last_response_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(300))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutgoingMail(Base):
    """A message waiting for the dispatch pass to send it: rendered (RFC 5322 bytes), or
    an appointment notice (JSON) rendered just before it is sent."""

    __tablename__ = "outgoing_mail"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    message: Mapped[bytes | None] = mapped_column(LargeBinary)
    notice: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(300))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Reminder(Base):
    __tablename__ = "reminders"

    appointment_id: Mapped[int] = mapped_column(ForeignKey("appointments.id", ondelete="CASCADE"), primary_key=True)
    hours_before: Mapped[int] = mapped_column(Integer, primary_key=True)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PasswordResetRequest(Base):
    """A forgot-password request as recorded on the request path (the same for known and
    unknown addresses); the dispatch pass turns it into a token and a message."""

    __tablename__ = "password_reset_requests"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EmailVerificationToken(Base):
    __tablename__ = "email_verification_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
