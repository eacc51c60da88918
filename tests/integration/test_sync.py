"""The sync pass against real Postgres and Redis: it expires holds past their deadline,
repairs hand-corrupted cache values (and counts each repair once, even when two passes
run at once), and still expires holds when Redis is down.

The pass works on whole tables and the whole keyspace, so this module has a database
and a redis-server of its own: the counts below are exact."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import date

from sqlalchemy import text

from reservations.adapters.slot_cache import READ_TIMEOUT_SECONDS, SlotCache, day_key, encode_day
from reservations.composition import Container
from reservations.usecases.housekeeping import SyncSummary
from tests.builders import (
    SLOT,
    WEEK,
    MeetingCache,
    confirm,
    create_user,
    fresh_days,
    hold,
    listing,
    meeting_transaction,
    slot_tags,
)
from tests.redis_server import HangingServer, RedisAttempts, RedisServer
from tests.world import HOLD_MINUTES, SyncWorld

MEETING_TIMEOUT_SECONDS = 10


def bumped(tag: str) -> str:
    """The tag after one more write to its day."""
    cache_format, provider_version, day_version = tag.split(":")
    return f"{cache_format}:{provider_version}:{int(day_version) + 1}"


def corrupt(cache: SlotCache, provider_id: int, tags: Mapping[date, str]) -> int:
    """Hand-edit six cached days of the provider in six different ways; returns 6."""
    days = {day: json.loads(cache.client.get(day_key(provider_id, day))) for day in WEEK[:6]}
    assert all(value["version"] == tags[day] for day, value in days.items())
    monday, tuesday, wednesday, thursday, friday, saturday = WEEK[:6]
    # Monday: an extra offered start (10 minutes off the grid)
    days[monday]["starts"].append(days[monday]["starts"][0] + 600)
    # Tuesday: a start removed
    days[tuesday]["starts"].pop()
    # Wednesday: a busy range dropped (the held slot would look free)
    assert days[wednesday]["busy"], "Wednesday should have a hold to drop"
    days[wednesday]["busy"].pop()
    # Friday: `busy` of the wrong type; Saturday: a start past what a timestamp can be
    days[friday]["busy"] = {}
    days[saturday]["starts"] = [99_999_999_999_999_999]
    for day in (monday, tuesday, wednesday, friday, saturday):
        cache.client.set(day_key(provider_id, day), json.dumps(days[day]), ex=600)
    # Thursday: garbage under the key of a current value
    cache.client.set(day_key(provider_id, thursday), b"\x00garbage{", ex=600)
    return 6


# --- expiry ------------------------------------------------------------------------------------


def test_a_pass_expires_holds_past_their_deadline_and_nothing_else(sync_world: SyncWorld) -> None:
    # Given: three holds made now, one made 20 minutes later, and one confirmed booking
    provider = sync_world.provider_with_week().id
    stale = sync_world.holds(provider, 3)
    sync_world.clock.advance(minutes=20)
    live = sync_world.holds(provider, 1, first_slot=3)
    patient = create_user(sync_world.container, "patient")
    booked = hold(sync_world.container, patient, provider, SLOT.replace(hour=14))
    confirm(sync_world.container, patient, booked)
    before = slot_tags(sync_world.container, provider)

    # When: a pass runs just after the first three deadlines
    sync_world.clock.advance(minutes=HOLD_MINUTES - 20)
    summary = sync_world.sync(sync_world.cache)

    # Then
    assert summary.expired_holds == 3
    assert summary.cache_available is True
    assert summary.duration_ms >= 0
    assert sync_world.statuses(stale) == ["expired"] * 3
    assert sync_world.statuses(live) == ["reserved"]
    assert sync_world.statuses([booked]) == ["confirmed"]
    # The expired holds' days (Wednesday and either side) were bumped, once; no other day.
    after = slot_tags(sync_world.container, provider)
    assert after == {day: bumped(tag) if day in WEEK[1:4] else tag for day, tag in before.items()}
    assert sync_world.sync(sync_world.cache).expired_holds == 0


def test_expiring_holds_makes_their_cached_days_stale_not_repaired(sync_world: SyncWorld) -> None:
    provider = sync_world.provider_with_week().id
    sync_world.holds(provider, 2)
    listing(sync_world.container, sync_world.cache, provider)
    sync_world.clock.advance(minutes=HOLD_MINUTES)

    summary = sync_world.sync(sync_world.cache)

    # The expiry bumped Tuesday to Thursday, so those three cached days are misses: stale,
    # left to their TTL. The other four are still right, so nothing is repaired.
    assert (summary.expired_holds, summary.keys_checked, summary.keys_stale, summary.keys_repaired) == (2, 7, 3, 0)
    assert listing(sync_world.container, sync_world.cache, provider).days_from_store == 4


# --- repair --------------------------------------------------------------------------------------


def test_hand_corrupted_values_are_repaired_by_the_next_pass_and_only_once(sync_world: SyncWorld) -> None:
    # Given: a provider with a hold and a booking, its week cached, then edited by hand
    provider = sync_world.provider_with_week().id
    sync_world.holds(provider, 1)
    patient = create_user(sync_world.container, "patient")
    confirm(sync_world.container, patient, hold(sync_world.container, patient, provider, SLOT.replace(hour=14)))
    truth = listing(sync_world.container, None, provider).slots
    listing(sync_world.container, sync_world.cache, provider)
    tags = slot_tags(sync_world.container, provider)
    edited = corrupt(sync_world.cache, provider, tags)
    # A key of a provider that does not exist, and one for an older version of the data.
    sync_world.cache.client.set(
        day_key(999_999_999, WEEK[0]), encode_day(fresh_days(sync_world.container, provider, WEEK[:1])[0], "1:1")
    )
    sunday = json.loads(sync_world.cache.client.get(day_key(provider, WEEK[6])))
    cache_format, provider_version, day_version = tags[WEEK[6]].split(":")
    sunday["version"] = f"{cache_format}:{int(provider_version) - 1}:{day_version}"
    sync_world.cache.client.set(day_key(provider, WEEK[6]), json.dumps(sunday))

    # When
    summary = sync_world.sync(sync_world.cache)

    # Then: four edits fixed, the orphan removed; the old-version value is only a miss
    assert summary.expired_holds == 0
    assert summary.keys_checked == 8
    assert summary.keys_repaired == edited + 1
    assert summary.keys_stale == 1
    assert sync_world.cache.client.get(day_key(999_999_999, WEEK[0])) is None
    correct = {day.day: encode_day(day, tags[day.day]) for day in fresh_days(sync_world.container, provider, WEEK)}
    for day in WEEK[:6]:
        assert sync_world.cache.client.get(day_key(provider, day)) == correct[day].encode()
    assert 0 < sync_world.cache.client.ttl(day_key(provider, WEEK[3])) <= 600
    repaired = listing(sync_world.container, sync_world.cache, provider)
    assert (repaired.days_from_store, repaired.slots) == (6, truth)

    # And a second pass finds nothing to repair.
    again = sync_world.sync(sync_world.cache)
    assert (again.keys_checked, again.keys_repaired, again.keys_stale) == (7, 0, 0)


# --- two passes at once ----------------------------------------------------------------------------


def test_two_passes_at_once_neither_wait_on_nor_double_count_each_other(sync_world: SyncWorld) -> None:
    # Given: six stale holds on one provider, six hand-corrupted cached days on another
    holding = sync_world.provider_with_week().id
    stale = sync_world.holds(holding, 6)
    sync_world.clock.advance(minutes=10)
    cached = sync_world.provider_with_week().id
    sync_world.holds(cached, 1, first_slot=8)  # still live when the passes run
    listing(sync_world.container, sync_world.cache, cached)
    edited = corrupt(sync_world.cache, cached, slot_tags(sync_world.container, cached))
    sync_world.clock.advance(minutes=HOLD_MINUTES - 10)

    expiry_meeting = threading.Barrier(2, timeout=MEETING_TIMEOUT_SECONDS)
    read_meeting = threading.Barrier(2, timeout=MEETING_TIMEOUT_SECONDS)

    def one_pass(_: int) -> SyncSummary:
        cache = MeetingCache.meeting_at(sync_world.redis.url(), read_meeting)
        try:
            return sync_world.sync(
                cache, transaction=meeting_transaction(sync_world.container.unit_of_work, expiry_meeting)
            )
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
    assert first.cache_available and second.cache_available
    assert sync_world.statuses(stale) == ["expired"] * len(stale)
    again = sync_world.sync(sync_world.cache)
    assert (again.expired_holds, again.keys_repaired) == (0, 0)


# --- Redis down -----------------------------------------------------------------------------------


def test_a_pass_with_redis_stopped_still_expires_holds(sync_world: SyncWorld) -> None:
    provider = sync_world.provider_with_week().id
    stale = sync_world.holds(provider, 2)
    sync_world.clock.advance(minutes=HOLD_MINUTES)
    with RedisServer() as server:
        cache = sync_world.new_cache(server.url())
        server.stop()
        summary = sync_world.sync(cache)
    assert (summary.expired_holds, summary.cache_available, summary.keys_checked) == (2, False, 0)
    assert sync_world.statuses(stale) == ["expired", "expired"]


def test_a_pass_with_a_hanging_redis_still_expires_holds_and_ends(sync_world: SyncWorld) -> None:
    provider = sync_world.provider_with_week().id
    sync_world.holds(provider, 2)
    sync_world.clock.advance(minutes=HOLD_MINUTES)
    hanging = HangingServer()
    try:
        cache = sync_world.new_cache(hanging.url())
        attempts = RedisAttempts(cache.client)
        summary = sync_world.sync(cache)
        # The pass gave up after one attempt, bounded by the short read timeout (not
        # redis-py's default stall): the client is configured that way and tried once.
        assert cache.client.connection_pool.connection_kwargs["socket_timeout"] == READ_TIMEOUT_SECONDS
        assert attempts.count == 1
        assert hanging.wait_for_accepted(1) == 1
    finally:
        hanging.close()
    assert (summary.expired_holds, summary.cache_available) == (2, False)


def test_a_pass_without_a_cache_expires_holds_and_says_so(sync_world: SyncWorld) -> None:
    provider = sync_world.provider_with_week().id
    sync_world.holds(provider, 1)
    sync_world.clock.advance(minutes=HOLD_MINUTES)
    summary = sync_world.sync(None)
    assert (summary.expired_holds, summary.cache_available) == (1, False)


def test_a_pass_reconciles_cached_days_centuries_apart_and_purges_spent_rows(container: Container) -> None:
    """Listings may be cached anywhere between 1970 and 2199; a pass must not try to
    generate one span across them. Spent rows (old idempotency records, login failures)
    are purged. Through the housekeeping use case, on the suite's database and Redis."""
    provider = create_user(container, "provider")
    patient = create_user(container, "patient")
    claims = patient.claims(container)
    container.schedule.free_slots(claims, provider.id, date(2027, 1, 4), date(2027, 1, 5))
    # Listings no longer cache days past the horizon; an older release did, so such keys
    # may still be in Redis when this release's pass runs.
    for day in ("2199-12-01", "2199-12-02"):
        container.day_store.client.set(f"provider:{provider.id}:timeslots:{day}", "2:stale", ex=600)  # type: ignore[attr-defined]
    with container.unit_of_work() as session:
        session.execute(
            text(
                "INSERT INTO login_failures (email_key, failed_at) VALUES ('x@example.com', now() - interval '2 days')"
            )
        )
    summary = container.housekeeping.sync_pass()
    assert summary.cache_available is True
    assert summary.keys_checked >= 4
    assert summary.rows_purged >= 1
