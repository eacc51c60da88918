"""The one place tests build their world: a controllable clock, users with tokens,
weekday hours, holds, confirmations, cancellations, listings, domain services for a
session, private databases, and the doubles that force cache and sync races.

Builders go through the composition root's use cases (``Container.accounts``,
``.schedule``, ``.booking``) unless the thing they build is what a test is about; the
domain-service helpers (``account_service`` ...) are for domain-tier tests that run in a
rolled-back session."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import httpx
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from reservations.adapters.db import User
from reservations.adapters.security import AccessClaims
from reservations.adapters.slot_cache import SlotCache
from reservations.composition import Container
from reservations.domain.accounts import AccountService
from reservations.domain.booking import BookingService
from reservations.domain.errors import Conflict
from reservations.domain.scheduling import (
    DaySlots,
    DayStore,
    PostedAvailability,
    ProviderSchedule,
    SlotListing,
    WeeklyHours,
    day_tags,
    parse_posted_availability,
)
from reservations_dev import databases

NOW = datetime(2027, 1, 4, 12, 0, tzinfo=UTC)  # a Monday
WEEK = [NOW.date() + timedelta(days=offset) for offset in range(7)]  # Mon 4 .. Sun 10 January
SLOT = datetime(2027, 1, 6, 9, 0, tzinfo=UTC)  # Wednesday 09:00, offered and far enough ahead
PASSWORD = "password1"
TOKEN_TTL = timedelta(days=30)  # outlives any clock advance a test makes


class Clock:
    """A controllable clock for containers and services."""

    def __init__(self, now: datetime | None = None) -> None:
        self.current = now or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


# --- users ---------------------------------------------------------------------------------


class Person(NamedTuple):
    """A registered user and a long-lived access token for it."""

    id: int
    token: str
    role: str = "patient"
    email: str = ""

    def claims(self, container: Container) -> AccessClaims:
        """The verified claims of the token, as the HTTP edge would get them."""
        return container.accounts.verify(self.token)


def create_user(
    container: Container, role: str, timezone: str = "UTC", *, caller: AccessClaims | None = None
) -> Person:
    """A user registered through the accounts use case, with a token signed by the
    container's codec (valid for TOKEN_TTL, so clock advances never expire it)."""
    email = unique_email(role)
    user = container.accounts.register(caller, name=role, email=email, password=PASSWORD, role=role, timezone=timezone)
    token = container.token_codec().issue_access(
        user_id=user.id, role=role, token_version=user.token_version, now=container.now(), ttl=TOKEN_TTL
    )
    return Person(user.id, token, role, email)


def create_admin(container: Container) -> Person:
    """An admin: the first one through the bootstrap use case, further ones registered by
    an existing admin (the bootstrap refuses once any admin exists)."""
    email = unique_email("admin")
    try:
        user = container.accounts.create_first_admin(name="Admin", email=email, password=PASSWORD)
    except Conflict as error:
        if error.code != "admin_exists":
            raise
        with container.unit_of_work() as session:
            existing = session.scalars(select(User).where(User.role == "admin").order_by(User.id).limit(1)).one()
            claims = AccessClaims(existing.id, "admin", existing.token_version, container.now() + TOKEN_TTL)
        return create_user(container, "admin", caller=claims)
    token = container.token_codec().issue_access(
        user_id=user.id, role="admin", token_version=user.token_version, now=container.now(), ttl=TOKEN_TTL
    )
    return Person(user.id, token, "admin", email)


def _post(client: Any, path: str, *, json_body: Any = None, form: Any = None) -> tuple[int, Any]:
    """POST through a harness FunctionClient or, over real HTTP, an httpx.Client."""
    if isinstance(client, httpx.Client):
        response = client.post(path, json=json_body, data=form)
        return response.status_code, response.json()
    answered = client.post(path, json_body=json_body, form=form)
    return answered.status, answered.body


def http_register(client: Any, role: str = "patient", password: str = PASSWORD, **extra: str) -> dict[str, Any]:
    """POST /register (on an auth FunctionClient or a gateway's httpx.Client): the profile
    plus "password"."""
    body = {"name": f"{role}-{uuid.uuid4().hex[:4]}", "email": unique_email(role), "password": password, "role": role}
    status, created = _post(client, "/register", json_body={**body, **extra})
    assert status == 201, created
    return {**created, "password": password}


def http_login(client: Any, user: Mapping[str, Any]) -> dict[str, Any]:
    """POST /token (the form the original API took): the token pair."""
    status, pair = _post(client, "/token", form={"username": user["email"], "password": user["password"]})
    assert status == 200, pair
    result: dict[str, Any] = pair
    return result


def ident(user: int | Person) -> int:
    return user if isinstance(user, int) else user.id


# --- schedules -------------------------------------------------------------------------------


def post(container: Container, provider: Person, posted: PostedAvailability) -> None:
    container.schedule.post_availability(provider.claims(container), provider.id, posted)


def open_weekdays(
    container: Container, provider: Person, *, days: str = "M-F", end: str = "4pm", span_days: int = 28
) -> None:
    """Hours from 8am UTC (by default Monday to Friday until 4pm: 32 slots a day), for
    `span_days` days from NOW."""
    weekly = WeeklyHours(NOW.date(), NOW.date() + timedelta(days=span_days - 1), [(days, "8am", end)])
    post(container, provider, parse_posted_availability(weekly, (), (), None))


def close_day(container: Container, provider: Person, day: date) -> None:
    """An exception with no hours: the day offers nothing."""
    post(container, provider, parse_posted_availability(None, [(day, ())], (), None))


def move_to(container: Container, provider: Person, timezone: str) -> None:
    """A new time zone, posting no dates (the parser refuses an empty post, so built here)."""
    from reservations.domain.availability import Availability

    post(container, provider, PostedAvailability(Availability((), {}, {}), frozenset(), timezone))


# --- bookings ---------------------------------------------------------------------------------


def hold(container: Container, patient: Person, provider: int | Person, start: datetime = SLOT) -> int:
    reserved = container.booking.reserve(patient.claims(container), provider_id=ident(provider), start_time=start)
    return int(reserved.value["id"])


def confirm(container: Container, patient: Person, appointment_id: int) -> None:
    container.booking.confirm(patient.claims(container), slot_id=appointment_id)


def cancel(container: Container, actor: Person, appointment_id: int) -> None:
    container.booking.cancel(actor.claims(container), slot_id=appointment_id)


# --- reading what Postgres says ------------------------------------------------------------------


def slot_tags(container: Container, provider: int | Person, days: Sequence[date] = WEEK) -> dict[date, str]:
    """The tag each day's cached value must carry to be a hit, as Postgres says now."""
    with container.unit_of_work() as session:
        return day_tags(session, session.get_one(User, ident(provider)), days)


def listing(
    container: Container,
    store: DayStore | None,
    provider: int | Person,
    first: date = WEEK[0],
    last: date = WEEK[-1],
) -> SlotListing:
    """Free slots through the domain, with the given store (None: no cache)."""
    with container.unit_of_work() as session:
        return schedule_for(container, session, store=store).free_slots(ident(provider), first, last)


def fresh_days(container: Container, provider: int | Person, days: Sequence[date]) -> list[DaySlots]:
    """What Postgres says right now, computed without any cache."""
    with container.unit_of_work() as session:
        schedule = schedule_for(container, session)
        return schedule.compute_days(schedule.provider(ident(provider)), days)


# --- domain services for one session -------------------------------------------------------------


def account_service(container: Container, session: Session, now: datetime | None = None) -> AccountService:
    return AccountService(
        session,
        hasher=container.hasher,
        codec=container.token_codec(),
        policy=container.account_policy,
        now=now or container.now(),
    )


def schedule_for(
    container: Container, session: Session, *, store: DayStore | None = None, now: datetime | None = None
) -> ProviderSchedule:
    return ProviderSchedule(session, policy=container.booking_policy, now=now or container.now(), store=store)


def booking_for(container: Container, session: Session, now: datetime | None = None) -> BookingService:
    return BookingService(session, policy=container.booking_policy, now=now or container.now())


def session_user(container: Container, session: Session, role: str = "patient") -> tuple[str, str]:
    """A user registered by the domain service in the test's session: (e-mail, password)."""
    email = unique_email(role)
    account_service(container, session).register(name="U", email=email, password=PASSWORD, role=role)
    return email, PASSWORD


# --- databases of a module's own ----------------------------------------------------------------


def private_database(suite_database_url: str, label: str) -> AbstractContextManager[str]:
    """For checks that count over whole tables (a sync pass expires every stale hold)."""
    return databases.scratch_database(suite_database_url, f"reservations_{label}")


def empty_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE users, login_failures, outbox_events CASCADE"))
    finally:
        engine.dispose()


# --- doubles that force races ------------------------------------------------------------------


class WriteBeforePut:
    """A DayStore that forces the stale-set race: the first `put_days` first runs `write`
    (committed in its own transaction), then stores what the reader computed before it."""

    def __init__(self, inner: DayStore, write: Callable[[], object]) -> None:
        self.inner = inner
        self.write = write
        self.fired = False

    def get_days(self, provider_id: int, days: Sequence[date], tags: Mapping[date, str]) -> dict[date, DaySlots]:
        return self.inner.get_days(provider_id, days, tags)

    def put_days(self, provider_id: int, days: Sequence[DaySlots], tags: Mapping[date, str]) -> None:
        if not self.fired:
            self.fired = True
            self.write()
        self.inner.put_days(provider_id, days, tags)


Transaction = Callable[[], AbstractContextManager[Session]]


class MeetingCache(SlotCache):
    """Reads a batch of keys, then waits until the other pass has read it too: both passes
    then hold the same bad values and race to repair them."""

    meeting: threading.Barrier

    @classmethod
    def meeting_at(cls, url: str, meeting: threading.Barrier) -> MeetingCache:
        cache = cls.from_url(url, ttl_seconds=600)
        assert isinstance(cache, MeetingCache)
        cache.meeting = meeting
        return cache

    def raw(self, keys: Sequence[str]) -> list[Any]:
        values = super().raw(keys)
        self.meeting.wait()
        return values


def meeting_transaction(transaction: Transaction, meeting: threading.Barrier) -> Transaction:
    """A unit-of-work factory whose first unit (a pass's expiry batch) waits after its
    UPDATE and before its COMMIT until the other pass's expiry statement has run too.
    With SKIP LOCKED that statement does not wait for our row locks; without it, the
    meeting times out (BrokenBarrierError)."""
    first = [True]

    @contextmanager
    def meeting_first() -> Iterator[Session]:
        with transaction() as session:
            yield session
            if first[0]:
                first[0] = False
                meeting.wait()

    return meeting_first


@contextmanager
def container_at_now(settings: Any, **changes: Any) -> Iterator[Container]:
    """A composition root on `settings` (plus `changes`) whose clock starts at NOW, closed on exit."""
    container = Container(settings.model_copy(update=changes), clock=Clock(NOW))
    try:
        yield container
    finally:
        container.close()
