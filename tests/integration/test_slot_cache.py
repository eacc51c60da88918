"""The Redis slot cache against real Redis and Postgres: read-through, version tags that
make stale values misses (including the stale-set race), hold expiry by time on cached
days, corrupt values, the fail-fast client, and writes made while Redis is down. What a
client sees during an outage (one attempt per circuit period, one warning, one metric) is
proved at the handler tier, in tests/handlers/test_cache_handlers.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from reservations.adapters.slot_cache import (
    CIRCUIT_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    SlotCache,
    day_key,
    decode_day,
)
from reservations.composition import Container
from reservations.config import Settings
from reservations.domain.scheduling import Busy, DaySlots, bump_slot_days, days_around
from tests.builders import (
    NOW,
    SLOT,
    WEEK,
    Clock,
    Person,
    WriteBeforePut,
    cancel,
    close_day,
    confirm,
    create_user,
    hold,
    listing,
    move_to,
    open_weekdays,
    schedule_for,
    slot_tags,
)
from tests.redis_server import FakeMonotonic, RedisServer

WEDNESDAY = SLOT.date()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def container_at_now(settings: Settings, clock: Clock) -> Iterator[Container]:
    container = Container(settings.model_copy(update={"max_active_holds": 100}), clock=clock)
    yield container
    container.close()


@pytest.fixture
def cache(settings: Settings) -> Iterator[SlotCache]:
    """The suite's Redis database (13), as the functions would use it."""
    slot_cache = SlotCache.from_url(settings.redis_url, ttl_seconds=600)
    yield slot_cache
    slot_cache.client.close()


@pytest.fixture
def provider(container_at_now: Container) -> Person:
    provider = create_user(container_at_now, "provider")
    open_weekdays(container_at_now, provider)
    return provider


@pytest.fixture
def patient(container_at_now: Container) -> Person:
    return create_user(container_at_now, "patient")


def offered(slots: list[tuple[datetime, datetime]]) -> set[datetime]:
    return {start for start, _ in slots}


# --- values in Redis ------------------------------------------------------------------------


def test_days_round_trip_under_the_documented_key_with_a_ttl(cache: SlotCache) -> None:
    start = datetime(2027, 1, 6, 9, 0, tzinfo=UTC)
    day = DaySlots(
        WEDNESDAY,
        (start, start + timedelta(minutes=15), start + timedelta(minutes=30)),
        (
            Busy(start, start + timedelta(minutes=15), start + timedelta(hours=1), True),
            Busy(start + timedelta(minutes=15), start + timedelta(minutes=45), None, False),
        ),
    )
    provider_id = 990_000_000 + int(time.time() * 1000) % 1_000_000

    cache.put_days(provider_id, [day], {WEDNESDAY: "7:3"})

    assert cache.get_days(provider_id, [WEDNESDAY], {WEDNESDAY: "7:3"}) == {WEDNESDAY: day}
    # A value computed from another version of the day's or of the provider's data is a miss.
    assert cache.get_days(provider_id, [WEDNESDAY], {WEDNESDAY: "7:4"}) == {}
    assert cache.get_days(provider_id, [WEDNESDAY], {WEDNESDAY: "8:3"}) == {}
    key = f"provider:{provider_id}:timeslots:2027-01-06"
    assert day_key(provider_id, WEDNESDAY) == key
    assert 0 < cache.client.ttl(key) <= 600
    stored = json.loads(cache.client.get(key))
    assert stored["version"] == "7:3"
    assert decode_day(cache.client.get(key), WEDNESDAY) == ("7:3", day)
    cache.client.delete(key)


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json at all",
        b"\xff\xfe\x00",
        b"[]",
        b"42",
        b'{"starts": []}',
        b'{"version": 7, "starts": [], "busy": []}',
        b'{"version": "VERSION", "starts": [], "busy": {}}',
        b'{"version": "VERSION", "starts": [], "busy": [[1, 2]]}',
        b'{"version": "VERSION", "starts": [], "taken": {}}',
        b'{"version": "VERSION", "starts": [1e400], "busy": []}',
        b'{"version": "VERSION", "starts": [99999999999999999], "busy": []}',
        b'{"version": "VERSION", "starts": [-1000000000000000], "busy": []}',
        b'{"version": "VERSION", "starts": [], "busy": [[1, 2, 1e30, 1]]}',
    ],
)
def test_a_corrupt_value_is_a_miss_and_the_listing_still_answers(
    container_at_now: Container, cache: SlotCache, provider: Person, garbage: bytes
) -> None:
    # Given: a correct listing, then one cached day replaced by garbage (even garbage
    # carrying the current tag)
    expected = listing(container_at_now, cache, provider).slots
    tags = slot_tags(container_at_now, provider)
    cache.client.set(day_key(provider.id, WEDNESDAY), garbage.replace(b"VERSION", tags[WEDNESDAY].encode()))

    # When / Then: that day is recomputed, the others still come from the cache
    again = listing(container_at_now, cache, provider)
    assert again.slots == expected
    assert again.days_from_store == 6
    assert cache.get_days(provider.id, [WEDNESDAY], tags) != {}  # the recomputed day was stored back


# --- read-through and freshness ---------------------------------------------------------------


def test_read_through_fills_the_cache_and_then_serves_from_it(
    container_at_now: Container, cache: SlotCache, provider: Person
) -> None:
    first = listing(container_at_now, cache, provider)
    assert (first.days_from_store, first.days_total) == (0, 7)
    assert SLOT in offered(first.slots)

    second = listing(container_at_now, cache, provider)
    assert (second.days_from_store, second.days_total) == (7, 7)
    assert second.slots == first.slots

    # Overlapping range: Thursday to Sunday are cached, the following Monday to Wednesday are not.
    shifted = listing(container_at_now, cache, provider, WEEK[3], WEEK[3] + timedelta(days=6))
    assert (shifted.days_from_store, shifted.days_total) == (4, 7)


def test_each_committed_write_makes_the_cached_days_it_can_affect_a_miss(
    container_at_now: Container, cache: SlotCache, provider: Person, patient: Person, clock: Clock
) -> None:
    other_provider = create_user(container_at_now, "provider")
    open_weekdays(container_at_now, other_provider)
    listing(container_at_now, cache, other_provider)

    def warm() -> None:
        listing(container_at_now, cache, provider)
        assert listing(container_at_now, cache, provider).days_from_store == 7

    # A reservation change invalidates the UTC date of its slot and the days either side
    # (whatever the provider's zone, its local day is one of them): Tue 5 to Thu 7.
    around_slot = 7 - 3

    # Reserve
    warm()
    appointment = hold(container_at_now, patient, provider)
    after_reserve = listing(container_at_now, cache, provider)
    assert after_reserve.days_from_store == around_slot
    assert SLOT not in offered(after_reserve.slots)

    # Confirm: the day no longer says "taken until the hold deadline" but "taken"
    warm()
    confirm(container_at_now, patient, appointment)
    assert listing(container_at_now, cache, provider).days_from_store == around_slot
    clock.advance(hours=2)  # past the hold deadline
    assert SLOT not in offered(listing(container_at_now, cache, provider).slots)

    # Cancel
    warm()
    cancel(container_at_now, patient, appointment)
    after_cancel = listing(container_at_now, cache, provider)
    assert after_cancel.days_from_store == around_slot
    assert SLOT in offered(after_cancel.slots)

    # Availability change: only the posted day
    warm()
    close_day(container_at_now, provider, WEDNESDAY)
    after_close = listing(container_at_now, cache, provider)
    assert after_close.days_from_store == 6
    assert not [start for start in offered(after_close.slots) if start.date() == WEDNESDAY]

    # A new time zone shifts every local day: all of them
    warm()
    move_to(container_at_now, provider, "America/New_York")
    after_move = listing(container_at_now, cache, provider)
    assert after_move.days_from_store == 0
    assert after_move.slots == listing(container_at_now, None, provider).slots

    # Versions are per provider: the other provider's days were never invalidated.
    assert listing(container_at_now, cache, other_provider).days_from_store == 7


def test_a_write_leaves_the_cached_days_it_cannot_affect_hits(
    container_at_now: Container, cache: SlotCache, provider: Person, patient: Person
) -> None:
    # Given: two weeks listed, so cached
    two_weeks = (WEEK[0], WEEK[0] + timedelta(days=13))
    listing(container_at_now, cache, provider, *two_weeks)
    assert listing(container_at_now, cache, provider, *two_weeks).days_from_store == 14

    # When: a slot on Wednesday is reserved
    hold(container_at_now, patient, provider)

    # Then: a day five days away is still a hit, with its slots
    monday_after = WEDNESDAY + timedelta(days=5)
    far = listing(container_at_now, cache, provider, monday_after, monday_after)
    assert (far.days_from_store, far.days_total) == (1, 1)
    assert far.slots == listing(container_at_now, None, provider, monday_after, monday_after).slots
    assert len(far.slots) == 32
    # while the reserved day is a miss that no longer offers the slot
    near = listing(container_at_now, cache, provider, WEDNESDAY, WEDNESDAY)
    assert (near.days_from_store, near.days_total) == (0, 1)
    assert SLOT not in offered(near.slots)
    assert SLOT + timedelta(minutes=15) in offered(near.slots)


def test_a_hold_expiring_by_time_frees_the_slot_on_a_cached_day(
    container_at_now: Container, cache: SlotCache, provider: Person, patient: Person, clock: Clock
) -> None:
    # Given: a hold, and the week cached with it
    hold(container_at_now, patient, provider)
    listing(container_at_now, cache, provider)
    held = listing(container_at_now, cache, provider)
    assert held.days_from_store == 7
    assert SLOT not in offered(held.slots)

    # When: the deadline passes, and nothing writes
    clock.advance(minutes=30)

    # Then: still served from the cache, and the slot is free
    expired = listing(container_at_now, cache, provider)
    assert expired.days_from_store == 7
    assert SLOT in offered(expired.slots)


@pytest.mark.parametrize("write", ["reserve", "cancel"])
def test_stale_set_race_a_value_computed_before_a_write_is_never_served_after_it(
    container_at_now: Container, cache: SlotCache, provider: Person, patient: Person, write: str
) -> None:
    """Reader computes from old data, a writer commits, the reader then stores its old
    value: the tag is the version the reader read, so the next read ignores it."""
    existing = hold(container_at_now, patient, provider) if write == "cancel" else None

    def writer() -> None:
        if existing is None:
            hold(container_at_now, patient, provider)
        else:
            cancel(container_at_now, patient, existing)

    racing = WriteBeforePut(cache, writer)
    before = listing(container_at_now, racing, provider, WEDNESDAY, WEDNESDAY)
    assert racing.fired
    # The racing reader itself answered from the state it read (legitimately, it began first).
    assert (SLOT in offered(before.slots)) == (write == "reserve")

    after = listing(container_at_now, cache, provider, WEDNESDAY, WEDNESDAY)
    assert after.days_from_store == 0
    assert (SLOT in offered(after.slots)) == (write == "cancel")
    assert listing(container_at_now, cache, provider, WEDNESDAY, WEDNESDAY).slots == after.slots


def test_a_posting_provider_lock_does_not_block_a_bookings_day_versions(
    container_at_now: Container, provider: Person
) -> None:
    """A post locks the provider row, then bumps its days; a booking bumps its days last,
    and a new day's row checks its foreign key to the provider. That check must not wait
    for the post's lock, or the two could deadlock over the day rows."""
    with container_at_now.unit_of_work() as posting:
        schedule = schedule_for(container_at_now, posting, now=NOW)
        schedule.provider(provider.id, for_update=True)
        with container_at_now.unit_of_work() as booking:
            booking.execute(text("SET LOCAL lock_timeout = '2s'"))
            bump_slot_days(booking, provider.id, days_around(SLOT + timedelta(days=60)))  # days with no row yet


# --- Redis outages ------------------------------------------------------------------------------


def test_the_client_fails_fast_and_never_retries() -> None:
    slot_cache = SlotCache.from_url("redis://127.0.0.1:1/0", ttl_seconds=60)
    options = slot_cache.client.connection_pool.connection_kwargs
    assert options["socket_connect_timeout"] == CONNECT_TIMEOUT_SECONDS <= 0.1
    assert options["socket_timeout"] == READ_TIMEOUT_SECONDS <= 0.2
    assert options["retry"].get_retries() == 0
    assert slot_cache.breaker.open_seconds == CIRCUIT_SECONDS


def test_a_failing_outage_hook_does_not_fail_the_listing(container_at_now: Container, provider: Person) -> None:
    def broken_hook(_: BaseException) -> None:
        raise RuntimeError("metrics backend exploded")

    slot_cache = SlotCache.from_url("redis://127.0.0.1:1/0", ttl_seconds=60, on_open=broken_hook)
    assert listing(container_at_now, slot_cache, provider).days_from_store == 0
    assert slot_cache.breaker.is_open


def test_a_value_stored_before_an_outage_is_not_served_after_a_write_made_during_it(
    container_at_now: Container, provider: Person, patient: Person
) -> None:
    """Writes never need Redis: a write while Redis hangs leaves no stale value behind."""
    breaker_clock = FakeMonotonic()
    with RedisServer() as server:
        slot_cache = SlotCache.from_url(server.url(), ttl_seconds=600)
        slot_cache.breaker.clock = breaker_clock
        listing(container_at_now, slot_cache, provider)
        assert listing(container_at_now, slot_cache, provider).days_from_store == 7

        server.freeze()  # hung: keeps its data, answers nothing
        try:
            hold(container_at_now, patient, provider)
            during = listing(container_at_now, slot_cache, provider)
            assert during.days_from_store == 0
            assert SLOT not in offered(during.slots)
        finally:
            server.resume()

        breaker_clock.advance(CIRCUIT_SECONDS)
        after = listing(container_at_now, slot_cache, provider)
        # Tue 5 to Thu 7 are still in Redis under their old tags (misses); the rest still hold.
        assert after.days_from_store == 4
        assert SLOT not in offered(after.slots)
        assert listing(container_at_now, slot_cache, provider).days_from_store == 7
        slot_cache.client.close()
