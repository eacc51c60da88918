"""The sync pass against real Postgres and Redis: it expires holds past their deadline,
repairs hand-corrupted cache values (and counts each repair once, even when two passes
run at once), and still expires holds when Redis is down.

The pass works on whole tables and the whole keyspace, so this module has a database
and a redis-server of its own: the counts below are exact."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select

from reservations.config import Settings
from reservations.db import Appointment
from reservations.http.runtime import Runtime, booking_policy
from reservations.slot_cache import SlotCache, day_key, encode_day
from reservations.sync import SyncSummary, run_sync_pass
from tests.cache_world import (
    NOW,
    SLOT,
    WEEK,
    MeetingCache,
    confirm,
    create_user,
    empty_tables,
    fresh_days,
    hold,
    listing,
    meeting_transaction,
    open_weekdays,
    private_database,
    slot_tags,
)
from tests.conftest import Clock
from tests.redis_server import HangingServer, RedisServer

HOLD_MINUTES = 30
MEETING_TIMEOUT_SECONDS = 10


@pytest.fixture(scope="module")
def sync_database(database_url: str) -> Iterator[str]:
    with private_database(database_url, "sync") as url:
        yield url


@pytest.fixture(scope="module")
def sync_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@dataclass
class SyncWorld:
    runtime: Runtime
    clock: Clock
    cache: SlotCache
    redis_url: str

    def new_cache(self, url: str) -> SlotCache:
        return SlotCache.from_url(url, ttl_seconds=600)

    def sync(self, cache: SlotCache | None = None, *, transaction: Any = None) -> SyncSummary:
        return run_sync_pass(
            transaction or self.runtime.transaction,
            cache,
            policy=booking_policy(self.runtime.settings),
            now=self.clock(),
        )

    def statuses(self, ids: Sequence[int]) -> list[str]:
        with self.runtime.transaction() as session:
            rows = dict(
                session.execute(select(Appointment.id, Appointment.status).where(Appointment.id.in_(ids))).all()
            )
        return [rows[i] for i in ids]


@pytest.fixture
def world(settings: Settings, sync_database: str, sync_redis: RedisServer) -> Iterator[SyncWorld]:
    empty_tables(sync_database)
    flusher = sync_redis.client()
    flusher.flushall()
    flusher.close()
    clock = Clock(NOW)
    runtime = Runtime(
        settings.model_copy(
            update={
                "database_url": sync_database,
                "redis_url": sync_redis.url(),
                "max_active_holds": 100,
                "confirmation_grace_period_minutes": HOLD_MINUTES,
            }
        ),
        clock=clock,
    )
    cache = SlotCache.from_url(sync_redis.url(), ttl_seconds=600)
    yield SyncWorld(runtime, clock, cache, sync_redis.url())
    cache.client.close()
    runtime.engine.dispose()


def holds_for(world: SyncWorld, provider_id: int, count: int, *, first_slot: int = 0) -> list[int]:
    """`count` holds on Wednesday from 09:00 on, by different patients."""
    ids = []
    for index in range(count):
        patient, _ = create_user(world.runtime, "patient")
        start = SLOT.replace(hour=9 + (first_slot + index) // 4, minute=15 * ((first_slot + index) % 4))
        ids.append(hold(world.runtime, patient, provider_id, start))
    return ids


def provider_with_week(world: SyncWorld) -> int:
    provider_id, _ = create_user(world.runtime, "provider")
    open_weekdays(world.runtime, provider_id)
    return provider_id


def bumped(tag: str) -> str:
    """The tag after one more write to its day."""
    provider_version, day_version = tag.split(":")
    return f"{provider_version}:{int(day_version) + 1}"


def corrupt(cache: SlotCache, provider_id: int, tags: Mapping[date, str]) -> int:
    """Hand-edit six cached days of the provider in six different ways; returns 6."""
    days = {day: json.loads(cache.client.get(day_key(provider_id, day))) for day in WEEK[:6]}
    assert all(value["version"] == tags[day] for day, value in days.items())
    monday, tuesday, wednesday, thursday, friday, saturday = WEEK[:6]
    # Monday: an extra offered start (10 minutes off the grid)
    days[monday]["starts"].append(days[monday]["starts"][0] + 600)
    # Tuesday: a start removed
    days[tuesday]["starts"].pop()
    # Wednesday: a `taken` entry dropped (the held slot would look free)
    assert days[wednesday]["taken"], "Wednesday should have a hold to drop"
    days[wednesday]["taken"].pop(next(iter(days[wednesday]["taken"])))
    # Friday: `taken` of the wrong type; Saturday: a start past what a timestamp can be
    days[friday]["taken"] = []
    days[saturday]["starts"] = [99_999_999_999_999_999]
    for day in (monday, tuesday, wednesday, friday, saturday):
        cache.client.set(day_key(provider_id, day), json.dumps(days[day]), ex=600)
    # Thursday: garbage under the key of a current value
    cache.client.set(day_key(provider_id, thursday), b"\x00garbage{", ex=600)
    return 6


# --- expiry ------------------------------------------------------------------------------------


def test_a_pass_expires_holds_past_their_deadline_and_nothing_else(world: SyncWorld) -> None:
    # Given: three holds made now, one made 20 minutes later, and one confirmed booking
    provider = provider_with_week(world)
    stale = holds_for(world, provider, 3)
    world.clock.advance(minutes=20)
    live = holds_for(world, provider, 1, first_slot=3)
    patient, _ = create_user(world.runtime, "patient")
    booked = hold(world.runtime, patient, provider, SLOT.replace(hour=14))
    confirm(world.runtime, patient, booked)
    before = slot_tags(world.runtime, provider)

    # When: a pass runs just after the first three deadlines
    world.clock.advance(minutes=HOLD_MINUTES - 20)
    summary = world.sync(world.cache)

    # Then
    assert summary.expired_holds == 3
    assert summary.cache_available is True
    assert summary.duration_ms >= 0
    assert world.statuses(stale) == ["expired"] * 3
    assert world.statuses(live) == ["reserved"]
    assert world.statuses([booked]) == ["confirmed"]
    # The expired holds' days (Wednesday and either side) were bumped, once; no other day.
    after = slot_tags(world.runtime, provider)
    assert after == {day: bumped(tag) if day in WEEK[1:4] else tag for day, tag in before.items()}
    assert world.sync(world.cache).expired_holds == 0


def test_expiring_holds_makes_their_cached_days_stale_not_repaired(world: SyncWorld) -> None:
    provider = provider_with_week(world)
    holds_for(world, provider, 2)
    listing(world.runtime, world.cache, provider)
    world.clock.advance(minutes=HOLD_MINUTES)

    summary = world.sync(world.cache)

    # The expiry bumped Tuesday to Thursday, so those three cached days are misses: stale,
    # left to their TTL. The other four are still right, so nothing is repaired.
    assert (summary.expired_holds, summary.keys_checked, summary.keys_stale, summary.keys_repaired) == (2, 7, 3, 0)
    assert listing(world.runtime, world.cache, provider).days_from_store == 4


# --- repair --------------------------------------------------------------------------------------


def test_hand_corrupted_values_are_repaired_by_the_next_pass_and_only_once(world: SyncWorld) -> None:
    # Given: a provider with a hold and a booking, its week cached, then edited by hand
    provider = provider_with_week(world)
    holds_for(world, provider, 1)
    patient, _ = create_user(world.runtime, "patient")
    confirm(world.runtime, patient, hold(world.runtime, patient, provider, SLOT.replace(hour=14)))
    truth = listing(world.runtime, None, provider).slots
    listing(world.runtime, world.cache, provider)
    tags = slot_tags(world.runtime, provider)
    edited = corrupt(world.cache, provider, tags)
    # A key of a provider that does not exist, and one for an older version of the data.
    world.cache.client.set(
        day_key(999_999_999, WEEK[0]), encode_day(fresh_days(world.runtime, provider, WEEK[:1])[0], "1:1")
    )
    sunday = json.loads(world.cache.client.get(day_key(provider, WEEK[6])))
    provider_version, day_version = tags[WEEK[6]].split(":")
    sunday["version"] = f"{int(provider_version) - 1}:{day_version}"
    world.cache.client.set(day_key(provider, WEEK[6]), json.dumps(sunday))

    # When
    summary = world.sync(world.cache)

    # Then: four edits fixed, the orphan removed; the old-version value is only a miss
    assert summary.expired_holds == 0
    assert summary.keys_checked == 8
    assert summary.keys_repaired == edited + 1
    assert summary.keys_stale == 1
    assert world.cache.client.get(day_key(999_999_999, WEEK[0])) is None
    correct = {day.day: encode_day(day, tags[day.day]) for day in fresh_days(world.runtime, provider, WEEK)}
    for day in WEEK[:6]:
        assert world.cache.client.get(day_key(provider, day)) == correct[day].encode()
    assert 0 < world.cache.client.ttl(day_key(provider, WEEK[3])) <= 600
    repaired = listing(world.runtime, world.cache, provider)
    assert (repaired.days_from_store, repaired.slots) == (6, truth)

    # And a second pass finds nothing to repair.
    again = world.sync(world.cache)
    assert (again.keys_checked, again.keys_repaired, again.keys_stale) == (7, 0, 0)


# --- two passes at once ----------------------------------------------------------------------------


def test_two_passes_at_once_neither_wait_on_nor_double_count_each_other(world: SyncWorld) -> None:
    # Given: six stale holds on one provider, six hand-corrupted cached days on another
    holding = provider_with_week(world)
    stale = holds_for(world, holding, 6)
    world.clock.advance(minutes=10)
    cached = provider_with_week(world)
    holds_for(world, cached, 1, first_slot=8)  # still live when the passes run
    listing(world.runtime, world.cache, cached)
    edited = corrupt(world.cache, cached, slot_tags(world.runtime, cached))
    world.clock.advance(minutes=HOLD_MINUTES - 10)

    expiry_meeting = threading.Barrier(2, timeout=MEETING_TIMEOUT_SECONDS)
    read_meeting = threading.Barrier(2, timeout=MEETING_TIMEOUT_SECONDS)

    def one_pass(_: int) -> SyncSummary:
        cache = MeetingCache.meeting_at(world.redis_url, read_meeting)
        try:
            return world.sync(cache, transaction=meeting_transaction(world.runtime.transaction, expiry_meeting))
        finally:
            cache.client.close()

    # When: both passes run, forced to overlap in expiry (both UPDATEs before either
    # COMMIT) and in repair (both reads before either write)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(one_pass, range(2))

    # Then: SKIP LOCKED let the second expiry go on without waiting (the meeting would
    # have timed out otherwise), and the compare-and-set let one pass count each repair.
    assert first.expired_holds + second.expired_holds == len(stale)
    assert first.keys_repaired + second.keys_repaired == edited
    assert world.statuses(stale) == ["expired"] * len(stale)
    assert world.sync(world.cache).keys_repaired == 0


# --- Redis down -----------------------------------------------------------------------------------


def test_a_pass_with_redis_stopped_still_expires_holds(world: SyncWorld) -> None:
    provider = provider_with_week(world)
    stale = holds_for(world, provider, 2)
    world.clock.advance(minutes=HOLD_MINUTES)
    with RedisServer() as server:
        cache = world.new_cache(server.url())
        server.stop()
        summary = world.sync(cache)
    assert (summary.expired_holds, summary.cache_available, summary.keys_checked) == (2, False, 0)
    assert world.statuses(stale) == ["expired", "expired"]


def test_a_pass_with_a_hanging_redis_still_expires_holds_and_ends(world: SyncWorld) -> None:
    provider = provider_with_week(world)
    holds_for(world, provider, 2)
    world.clock.advance(minutes=HOLD_MINUTES)
    hanging = HangingServer()
    try:
        started = time.perf_counter()
        summary = world.sync(world.new_cache(hanging.url()))
        elapsed = time.perf_counter() - started
    finally:
        hanging.close()
    assert (summary.expired_holds, summary.cache_available) == (2, False)
    assert elapsed < 2.0  # sanity only: one short read timeout, not redis-py's default stall


def test_a_pass_without_a_cache_expires_holds_and_says_so(world: SyncWorld) -> None:
    provider = provider_with_week(world)
    holds_for(world, provider, 1)
    world.clock.advance(minutes=HOLD_MINUTES)
    summary = world.sync(None)
    assert (summary.expired_holds, summary.cache_available) == (1, False)


def test_a_pass_reconciles_cached_days_centuries_apart_and_purges_spent_rows(settings) -> None:  # type: ignore[no-untyped-def]
    """Listings may be cached anywhere between 1970 and 2199; a pass must not try to
    generate one span across them. Spent rows (old idempotency records, login failures)
    are purged."""
    from datetime import date as _date

    from sqlalchemy import text as _text

    from reservations.http.runtime import Runtime, booking_policy
    from reservations.scheduling import ProviderSchedule
    from reservations.sync import run_sync_pass

    runtime = Runtime(settings)
    try:
        provider = create_provider_for_sync(runtime)
        cache = runtime.day_store
        with runtime.transaction() as session:
            schedule = ProviderSchedule(session, policy=booking_policy(settings), now=runtime.now(), store=cache)
            schedule.free_slots(provider, _date(2027, 1, 4), _date(2027, 1, 5))
            schedule.free_slots(provider, _date(2199, 12, 1), _date(2199, 12, 2))
            session.execute(
                _text(
                    "INSERT INTO login_failures (email_key, failed_at) "
                    "VALUES ('x@example.com', now() - interval '2 days')"
                )
            )
        summary = run_sync_pass(runtime.transaction, cache, policy=booking_policy(settings), now=runtime.now())
        assert summary.cache_available is True
        assert summary.keys_checked >= 4
        assert summary.rows_purged >= 1
    finally:
        runtime.engine.dispose()


def create_provider_for_sync(runtime) -> int:  # type: ignore[no-untyped-def]
    with runtime.transaction() as session:
        user = runtime.accounts(session).register(
            name="P", email=f"sync-{uuid.uuid4().hex}@example.com", password="password1", role="provider"
        )
        return int(user.id)
