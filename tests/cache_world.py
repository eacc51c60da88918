"""Service-level setup shared by the slot-cache and sync tests: users, weekly hours, holds
and listings through the real services, plus a database of a module's own for checks
that count over whole tables (a sync pass expires every stale hold it can see)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from reservations import migrations
from reservations.accounts import AccountService
from reservations.availability import Availability, WeeklyPeriod, WeeklyWindow, parse_days, parse_window
from reservations.booking import BookingService
from reservations.db import User
from reservations.http.runtime import Runtime, booking_policy
from reservations.scheduling import (
    DaySlots,
    DayStore,
    PostedAvailability,
    ProviderSchedule,
    SlotListing,
    day_tags,
)
from reservations.slot_cache import SlotCache
from tests.conftest import unique_email

NOW = datetime(2027, 1, 4, 12, 0, tzinfo=UTC)  # a Monday
WEEK = [NOW.date() + timedelta(days=offset) for offset in range(7)]  # Mon 4 .. Sun 10 January
SLOT = datetime(2027, 1, 6, 9, 0, tzinfo=UTC)  # Wednesday 09:00, offered and far enough ahead


def private_database(suite_database_url: str, label: str) -> AbstractContextManager[str]:
    return migrations.scratch_database(suite_database_url, f"reservations_{label}")


def empty_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE users, login_failures CASCADE"))
    finally:
        engine.dispose()


def create_user(runtime: Runtime, role: str, timezone: str = "UTC") -> tuple[int, str]:
    """A user and an access token for it, made directly (no auth function needed)."""
    with runtime.transaction() as session:
        accounts = AccountService(
            session,
            hasher=runtime.hasher,
            codec=runtime.token_codec(),
            policy=runtime.account_policy,
            now=runtime.now(),
        )
        user = accounts.register(
            name=role, email=unique_email(role), password="password1", role=role, timezone=timezone
        )
        token = runtime.token_codec().issue_access(
            user_id=user.id, role=role, token_version=0, now=runtime.now(), ttl=timedelta(days=30)
        )
        return user.id, token


def open_weekdays(runtime: Runtime, provider_id: int) -> None:
    """Monday to Friday, 8am to 4pm UTC (32 slots a day), for four weeks from NOW."""
    weekly = (WeeklyWindow(parse_days("M-F"), parse_window("8am", "4pm")),)
    first, last = NOW.date(), NOW.date() + timedelta(days=27)
    touched = frozenset(first + timedelta(days=offset) for offset in range(28))
    with runtime.transaction() as session:
        schedule = ProviderSchedule(session, policy=booking_policy(runtime.settings), now=runtime.now())
        provider = schedule.provider(provider_id)
        schedule.post_availability(
            provider,
            provider_id,
            PostedAvailability(Availability((WeeklyPeriod(first, last, weekly),), {}, {}), touched, None),
        )


def close_day(runtime: Runtime, provider_id: int, day: date) -> None:
    """An exception with no hours: the day offers nothing."""
    with runtime.transaction() as session:
        schedule = ProviderSchedule(session, policy=booking_policy(runtime.settings), now=runtime.now())
        provider = schedule.provider(provider_id)
        schedule.post_availability(
            provider, provider_id, PostedAvailability(Availability((), {day: ()}, {}), frozenset({day}), None)
        )


def move_to(runtime: Runtime, provider_id: int, timezone: str) -> None:
    """A new time zone, posting no dates."""
    with runtime.transaction() as session:
        schedule = ProviderSchedule(session, policy=booking_policy(runtime.settings), now=runtime.now())
        provider = schedule.provider(provider_id)
        schedule.post_availability(
            provider, provider_id, PostedAvailability(Availability((), {}, {}), frozenset(), timezone)
        )


def hold(runtime: Runtime, patient_id: int, provider_id: int, start: datetime = SLOT) -> int:
    with runtime.transaction() as session:
        booking = BookingService(session, policy=booking_policy(runtime.settings), now=runtime.now())
        return booking.reserve(session.get_one(User, patient_id), provider_id, start).id


def confirm(runtime: Runtime, patient_id: int, appointment_id: int) -> None:
    with runtime.transaction() as session:
        booking = BookingService(session, policy=booking_policy(runtime.settings), now=runtime.now())
        booking.confirm(session.get_one(User, patient_id), appointment_id)


def cancel(runtime: Runtime, actor_id: int, appointment_id: int) -> None:
    with runtime.transaction() as session:
        booking = BookingService(session, policy=booking_policy(runtime.settings), now=runtime.now())
        booking.cancel(session.get_one(User, actor_id), appointment_id)


def slot_tags(runtime: Runtime, provider_id: int, days: Sequence[date] = WEEK) -> dict[date, str]:
    """The tag each day's cached value must carry to be a hit, as Postgres says now."""
    with runtime.transaction() as session:
        return day_tags(session, session.get_one(User, provider_id), days)


def listing(
    runtime: Runtime, store: DayStore | None, provider_id: int, first: date = WEEK[0], last: date = WEEK[-1]
) -> SlotListing:
    with runtime.transaction() as session:
        schedule = ProviderSchedule(session, policy=booking_policy(runtime.settings), now=runtime.now(), store=store)
        return schedule.free_slots(provider_id, first, last)


def fresh_days(runtime: Runtime, provider_id: int, days: Sequence[date]) -> list[DaySlots]:
    """What Postgres says right now, computed without any cache."""
    with runtime.transaction() as session:
        schedule = ProviderSchedule(session, policy=booking_policy(runtime.settings), now=runtime.now())
        return schedule.compute_days(schedule.provider(provider_id), days)


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


# --- forcing two sync passes to overlap ---------------------------------------------------------

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
    """A transaction factory whose first transaction (a pass's expiry batch) waits after
    its UPDATE and before its COMMIT until the other pass's expiry statement has run too.
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
