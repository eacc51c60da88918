"""The slot cache seen through the real Lambda handlers: the X-Cache header, freshness
across two separately loaded providers containers sharing one Redis (as two Lambda
containers would), the stale-set race, Redis outages (no 5xx, one attempt per circuit
period, one warning per period) and the scheduled cache_sync function."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import select

from reservations.adapters.db import SlotDayVersion, User
from reservations.adapters.slot_cache import CIRCUIT_SECONDS, READ_TIMEOUT_SECONDS, SlotCache, day_key
from tests.builders import WriteBeforePut, create_user
from tests.redis_server import FakeMonotonic, HangingServer, RedisAttempts, RedisServer
from tests.support import REPO, LambdaContext
from tests.world import SyncWorld, World, container_of

SCHEDULED_EVENT = json.loads((REPO / "events" / "scheduled.json").read_text())
WEEK = {
    "general_schedule": {
        "start_date": "2027-01-04",
        "end_date": "2027-01-31",
        "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
    }
}
WEDNESDAY = {"start_date": "2027-01-06", "end_date": "2027-01-06"}
SLOT = "2027-01-06T09:00:00Z"


def starts(response: Any) -> list[str]:
    assert response.status == 200, response.body
    return [slot["start_time"] for slot in response.body]


# --- hit / miss ----------------------------------------------------------------------------------
def test_a_cached_listing_still_refuses_a_token_revoked_a_moment_ago(world: World) -> None:
    """The listing checks the token's user in the same statement that reads the day
    versions: a hit costs one round trip, and a password change revokes at once."""
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)
    world.slots(provider, patient)
    assert world.slots(provider, patient).headers["x-cache"] == "hit"
    changed = world.auth.post(
        "/reset-password",
        token=patient["token"],
        json_body={"current_password": patient["password"], "new_password": "a-brand-new-password"},
    )
    assert changed.status == 200, changed.body
    refused = world.slots(provider, patient)
    assert (refused.status, refused.body["code"]) == (401, "token_revoked")


def test_a_listing_leaves_its_connection_transactional_for_the_next_write(world: World) -> None:
    """Listings read in autocommit (no BEGIN/COMMIT); the pooled connection they return
    must run the next unit of work as one transaction again."""
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)
    assert world.slots(provider, patient).status == 200
    container = container_of(world.providers)

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), container.unit_of_work() as session:
        session.get_one(User, provider["id"]).bio = "never committed"
        session.flush()
        raise Abandoned
    with container.unit_of_work() as session:
        assert session.get_one(User, provider["id"]).bio is None


def test_x_cache_is_miss_then_hit_then_partial_and_shared_between_containers(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)

    first = world.slots(provider, patient)
    assert first.headers["x-cache"] == "miss"
    second = world.slots(provider, patient)
    assert second.headers["x-cache"] == "hit"
    assert second.body == first.body
    assert len(first.body) == 5 * 32

    # Another container, same Redis: what A stored is a hit for B.
    other = world.slots(provider, patient, via=world.providers_b)
    assert (other.headers["x-cache"], other.body) == ("hit", first.body)

    # Three of these seven days are cached (Sun 10, Mon 11, Tue 12), four are not.
    later_week = {"start_date": "2027-01-10", "end_date": "2027-01-16"}
    assert world.slots(provider, patient, later_week, via=world.providers_b).headers["x-cache"] == "partial"
    assert world.slots(provider, patient, later_week).headers["x-cache"] == "hit"

    # The value under the documented key carries the day's tag from Postgres: the cache
    # format, the provider's version and the day's, as "2:{slots_version}:{day version}".
    container = container_of(world.providers)
    wednesday = date(2027, 1, 6)
    with container.unit_of_work() as session:
        slots_version = session.scalar(select(User.slots_version).where(User.id == provider["id"]))
        day_version = session.scalar(
            select(SlotDayVersion.version).where(
                SlotDayVersion.provider_id == provider["id"], SlotDayVersion.day == wednesday
            )
        )
    assert day_version is not None  # posting the week bumped it
    redis = SlotCache.from_url(container.settings.redis_url, ttl_seconds=1).client
    stored = json.loads(redis.get(f"provider:{provider['id']}:timeslots:2027-01-06"))
    redis.close()
    assert stored["version"] == f"2:{slots_version}:{day_version}"
    assert stored["starts"][0] == int(datetime(2027, 1, 6, 8, 0, tzinfo=UTC).timestamp())


def test_with_the_cache_disabled_every_listing_is_a_miss(world: World) -> None:
    world.settings(redis_url="")
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)
    first = world.slots(provider, patient)
    second = world.slots(provider, patient)
    assert [first.headers["x-cache"], second.headers["x-cache"]] == ["miss", "miss"]
    assert first.body == second.body and len(first.body) == 160


# --- freshness across containers -------------------------------------------------------------------


def test_after_each_committed_write_neither_container_shows_the_old_state(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)
    world.settings(confirmation_grace_period_minutes=10)  # holds end within the tokens' life
    containers = (world.providers, world.providers_b)

    def warm() -> None:
        for client in containers:
            world.slots(provider, patient, WEDNESDAY, via=client)
            assert world.slots(provider, patient, WEDNESDAY, via=client).headers["x-cache"] == "hit"

    def listed() -> list[list[str]]:
        return [starts(world.slots(provider, patient, WEDNESDAY, via=client)) for client in containers]

    # Availability change through container A: Wednesday becomes 10:00-10:30 only.
    warm()
    world.post_availability(
        provider, {"exceptions": [{"date": "2027-01-06", "times": [{"start": "10:00", "end": "10:30"}]}]}
    )
    assert listed() == [["2027-01-06T10:00:00Z", "2027-01-06T10:15:00Z"]] * 2
    world.post_availability(
        provider, {"exceptions": [{"date": "2027-01-06", "times": [{"start": "8:00", "end": "16:00"}]}]}
    )
    assert all(len(day) == 32 and SLOT in day for day in listed())

    # Reserve through appointments.
    warm()
    held = world.appointment("reserve", patient, {"provider_id": provider["id"], "start_time": SLOT})
    assert all(SLOT not in day for day in listed())

    # Confirm: the slot stays taken after the hold deadline would have passed.
    warm()
    world.appointment("confirm", patient, {"slot_id": held["id"]})
    world.clock.advance(minutes=11)
    assert all(SLOT not in day for day in listed())

    # Cancel (by the provider).
    warm()
    world.appointment("cancel", provider, {"slot_id": held["id"]})
    assert all(SLOT in day for day in listed())

    # Expiry by time: nothing writes, the cached day itself says when the hold ends.
    world.appointment("reserve", patient, {"provider_id": provider["id"], "start_time": SLOT})
    warm()
    assert all(SLOT not in day for day in listed())
    world.clock.advance(minutes=10)
    after_expiry = [world.slots(provider, patient, WEDNESDAY, via=client) for client in containers]
    assert [response.headers["x-cache"] for response in after_expiry] == ["hit", "hit"]
    assert all(SLOT in starts(response) for response in after_expiry)


def test_stale_set_race_a_slow_readers_old_value_is_never_served(world: World) -> None:
    """Container B's reader computes Wednesday, a reservation commits through the
    appointments container, then B stores what it computed: the next listing, through
    either container, treats that value as a miss."""
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)

    def reserve() -> None:
        # Another container is another process: run it on its own thread (and event loop),
        # not nested inside the reader's running loop.
        writer = threading.Thread(
            target=world.appointment, args=("reserve", patient, {"provider_id": provider["id"], "start_time": SLOT})
        )
        writer.start()
        writer.join()

    container_b = container_of(world.providers_b)
    racing = WriteBeforePut(container_b.day_store, reserve)
    container_b.__dict__["day_store"] = racing  # replaces the cached_property's value

    during = world.slots(provider, patient, WEDNESDAY, via=world.providers_b)
    assert racing.fired
    assert during.headers["x-cache"] == "miss"
    assert SLOT in starts(during)  # the slow reader began before the reservation

    next_listing = world.slots(provider, patient, WEDNESDAY)
    assert next_listing.headers["x-cache"] == "miss"
    assert SLOT not in starts(next_listing)
    # That miss stored the right day: from now on both containers serve it from Redis.
    for client in (world.providers_b, world.providers):
        cached = world.slots(provider, patient, WEDNESDAY, via=client)
        assert cached.headers["x-cache"] == "hit"
        assert SLOT not in starts(cached)


# --- Redis outages -------------------------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def outage_log() -> Iterator[Records]:
    records = Records()
    cache_logger = logging.getLogger("reservations.cache")
    cache_logger.addHandler(records)
    yield records
    cache_logger.removeHandler(records)


def emitted(stdout: str, metric: str) -> float:
    """The total of one metric in the CloudWatch EMF blobs Powertools printed."""
    total = 0.0
    for line in stdout.splitlines():
        if line.startswith('{"_aws"'):
            values = json.loads(line).get(metric, [])
            total += sum(values) if isinstance(values, list) else float(values)
    return total


@dataclass
class CachedProviders:
    """The World with its cache on a Redis the test owns, a breaker clock the test moves
    and a count of the Redis attempts of the providers container; plus a provider with
    weekday hours and a patient."""

    world: World
    breaker_clock: FakeMonotonic
    attempts: RedisAttempts
    provider: dict[str, Any]
    patient: dict[str, Any]

    @property
    def cache(self) -> SlotCache:
        store = container_of(self.world.providers).day_store
        assert isinstance(store, SlotCache)
        return store

    def week(self) -> Any:
        return self.world.slots(self.provider, self.patient)


def cached_providers(world: World, redis_url: str) -> CachedProviders:
    provider, patient = world.user("provider"), world.user("patient")
    # Only the slot cache's Redis changes (before any listing creates the cache): sign-ins
    # keep the suite's Redis for their rate limits, so this Redis sees the cache alone.
    container_of(world.providers).configure(redis_url=redis_url)
    world.post_availability(provider, WEEK)
    store = container_of(world.providers).day_store
    assert isinstance(store, SlotCache)
    breaker_clock = FakeMonotonic()
    store.breaker.clock = breaker_clock
    return CachedProviders(world, breaker_clock, RedisAttempts(store.client), provider, patient)


def test_redis_stopped_serves_from_postgres_tries_once_per_period_and_recovers(
    world: World, outage_log: Records, capsys: pytest.CaptureFixture[str]
) -> None:
    with RedisServer() as server:
        cached = cached_providers(world, server.url())
        healthy = cached.week()
        assert healthy.headers["x-cache"] == "miss"
        assert cached.week().headers["x-cache"] == "hit"

        # When: Redis dies and five requests come in
        server.stop()
        capsys.readouterr()
        before = cached.attempts.count
        down = [cached.week() for _ in range(5)]

        # Then: no 5xx, the same answer from Postgres, one Redis attempt (the failed read
        # opened the circuit, so even the write-back was skipped), one warning, one metric
        assert [(r.status, r.headers["x-cache"]) for r in down] == [(200, "miss")] * 5
        assert all(r.body == healthy.body for r in down)
        assert cached.attempts.count - before == 1
        assert cached.cache.failures == 1
        assert cached.cache.breaker.is_open
        assert len(outage_log.messages) == 1
        assert "Redis unavailable" in outage_log.messages[0]
        assert emitted(capsys.readouterr().out, "CacheUnavailable") == 1.0

        # When: the circuit period passes and Redis is still down: one more attempt and warning
        cached.breaker_clock.advance(CIRCUIT_SECONDS)
        again = cached.week()
        assert (again.status, again.body) == (200, healthy.body)
        assert (cached.cache.failures, len(outage_log.messages)) == (2, 2)
        assert cached.attempts.count - before == 2
        assert emitted(capsys.readouterr().out, "CacheUnavailable") == 1.0
        # and none within the next period
        cached.breaker_clock.advance(CIRCUIT_SECONDS - 1)
        assert cached.week().status == 200
        assert (cached.cache.failures, len(outage_log.messages), cached.attempts.count - before) == (2, 2, 2)

        # When: Redis is back (empty) and the period is over: the cache fills and serves again
        server.start()
        cached.breaker_clock.advance(1)
        assert cached.week().headers["x-cache"] == "miss"
        back = cached.week()
        assert (back.headers["x-cache"], back.body) == ("hit", healthy.body)
        assert (cached.cache.failures, len(outage_log.messages)) == (2, 2)


def test_redis_that_accepts_and_never_answers_costs_one_short_timeout(world: World, outage_log: Records) -> None:
    hanging = HangingServer()
    try:
        cached = cached_providers(world, hanging.url())
        # A hung Redis costs at most one read timeout per attempt: short, and never retried.
        options = cached.cache.client.connection_pool.connection_kwargs
        assert options["socket_timeout"] == READ_TIMEOUT_SECONDS
        assert options["retry"].get_retries() == 0

        responses = [cached.week() for _ in range(5)]

        assert [(r.status, r.headers["x-cache"]) for r in responses] == [(200, "miss")] * 5
        assert len(responses[0].body) == 5 * 32  # Wed to Fri, Mon and Tue, from Postgres
        assert all(r.body == responses[0].body for r in responses)
        # One Redis attempt for five requests (counted by the client, so the negative
        # needs no waiting); the server saw that one connection.
        assert cached.attempts.count == 1
        assert hanging.wait_for_accepted(1) == 1
        assert cached.cache.failures == 1
        assert len(outage_log.messages) == 1

        cached.breaker_clock.advance(CIRCUIT_SECONDS)
        last = cached.week()
        assert (last.status, last.body) == (200, responses[0].body)
        assert cached.attempts.count == 2
        assert hanging.wait_for_accepted(2) == 2
        assert (cached.cache.failures, len(outage_log.messages)) == (2, 2)
    finally:
        hanging.close()


# --- the scheduled cache_sync function -------------------------------------------------------------
# (Concurrent passes and passes with Redis down are proved on the housekeeping use case,
# in tests/integration/test_sync.py; here, what the scheduled function does end to end.)


def invoke(module: ModuleType) -> dict[str, Any]:
    result: dict[str, Any] = module.handler(dict(SCHEDULED_EVENT), LambdaContext())
    return result


def test_the_scheduled_event_expires_stale_holds_and_returns_the_summary(sync_world: SyncWorld) -> None:
    # Given: a provider with three holds, the week cached while they were live
    provider = sync_world.provider_with_week()
    patient = create_user(sync_world.container, "patient")
    stale = sync_world.holds(provider, 3)
    providers = sync_world.client("providers")
    path = f"/providers/{provider.id}/time-slots"
    held = providers.get(path, token=patient.token, query=WEDNESDAY)
    assert "2027-01-06T09:00:00Z" not in starts(held)

    # When: the schedule fires after the deadline
    sync_world.clock.advance(minutes=30)
    summary = invoke(sync_world.function("cache_sync"))

    # Then
    assert set(summary) == {
        "expired_holds",
        "keys_checked",
        "keys_repaired",
        "keys_stale",
        "rows_purged",
        "appointments_purged",
        "audit_entries_purged",
        "cache_available",
        "duration_ms",
    }
    assert summary["expired_holds"] == 3
    assert summary["cache_available"] is True
    assert (summary["keys_checked"], summary["keys_stale"], summary["keys_repaired"]) == (1, 1, 0)
    freed = providers.get(path, token=patient.token, query=WEDNESDAY)
    assert freed.headers["x-cache"] == "miss"
    assert {"2027-01-06T09:00:00Z", "2027-01-06T09:15:00Z", "2027-01-06T09:30:00Z"} <= set(starts(freed))
    assert invoke(sync_world.function("cache_sync"))["expired_holds"] == 0
    assert sync_world.statuses(stale) == ["expired"] * 3


def test_a_hand_corrupted_value_is_repaired_by_the_scheduled_pass(sync_world: SyncWorld) -> None:
    provider = sync_world.provider_with_week()
    patient = create_user(sync_world.container, "patient")
    sync_world.holds(provider, 1)
    providers = sync_world.client("providers")
    path = f"/providers/{provider.id}/time-slots"
    truth = providers.get(path, token=patient.token, query=WEDNESDAY).body
    redis = sync_world.redis.client()
    key = day_key(provider.id, date(2027, 1, 6))
    value = json.loads(redis.get(key))
    value["busy"] = []  # the hold dropped by hand: 09:00 would look free
    redis.set(key, json.dumps(value))
    corrupted = providers.get(path, token=patient.token, query=WEDNESDAY)
    assert corrupted.headers["x-cache"] == "hit"
    assert "2027-01-06T09:00:00Z" in starts(corrupted)  # what a wrong cache looks like

    container = sync_world.function("cache_sync")
    first, second = invoke(container), invoke(container)

    assert (first["keys_checked"], first["keys_repaired"]) == (1, 1)
    assert (second["keys_checked"], second["keys_repaired"]) == (1, 0)
    repaired = providers.get(path, token=patient.token, query=WEDNESDAY)
    assert (repaired.headers["x-cache"], repaired.body) == ("hit", truth)
    redis.close()


def test_days_past_the_horizon_are_empty_and_never_cached(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)
    far = {"start_date": "2027-06-01", "end_date": "2027-06-07"}  # past the 90-day horizon
    listed = world.providers.get(f"/providers/{provider['id']}/time-slots", token=patient["token"], query=far)
    assert (listed.status, listed.body) == (200, [])
    keys = container_of(world.providers).day_store.client.keys(f"provider:{provider['id']}:timeslots:2027-06-*")  # type: ignore[attr-defined]
    assert keys == []
