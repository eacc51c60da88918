"""The slot cache seen through the real Lambda handlers: the X-Cache header, freshness
across two separately loaded providers containers sharing one Redis (as two Lambda
containers would), the stale-set race, Redis outages (no 5xx, one attempt per circuit
period, one warning per period) and the scheduled cache_sync function."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import select

from reservations import sync
from reservations.config import Settings
from reservations.db import SlotDayVersion, User
from reservations.http.runtime import Runtime
from reservations.slot_cache import CIRCUIT_SECONDS, SlotCache, day_key
from tests.cache_world import (
    NOW,
    MeetingCache,
    WriteBeforePut,
    create_user,
    empty_tables,
    hold,
    meeting_transaction,
    open_weekdays,
    private_database,
)
from tests.conftest import Clock, unique_email
from tests.redis_server import FakeMonotonic, HangingServer, RedisServer
from tests.support import REPO, FunctionClient, LambdaContext, load_function

SCHEDULED_EVENT = json.loads((REPO / "events" / "scheduled.json").read_text())
WEEK = {
    "general_schedule": {
        "start_date": "2027-01-04",
        "end_date": "2027-01-31",
        "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
    }
}
WEDNESDAY = {"start_date": "2027-01-06", "end_date": "2027-01-06"}
SEVEN_DAYS = {"start_date": "2027-01-06", "end_date": "2027-01-12"}
SLOT = "2027-01-06T09:00:00Z"


def runtime_of(client: FunctionClient) -> Runtime:
    runtime: Runtime = client.module.app.state.runtime
    return runtime


def starts(response: Any) -> list[str]:
    assert response.status == 200, response.body
    return [slot["start_time"] for slot in response.body]


class World:
    """auth, two providers containers and appointments, one clock, one Redis."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.auth = FunctionClient(load_function("auth"))
        self.providers_a = FunctionClient(load_function("providers"))
        self.providers_b = FunctionClient(load_function("providers"))
        self.appointments = FunctionClient(load_function("appointments"))
        for client in self.clients:
            runtime_of(client).clock = clock

    @property
    def clients(self) -> list[FunctionClient]:
        return [self.auth, self.providers_a, self.providers_b, self.appointments]

    def user(self, role: str) -> dict[str, Any]:
        body = {"name": role, "email": unique_email(role), "password": "password1", "role": role}
        created = self.auth.post("/register", json_body=body)
        assert created.status == 201, created.body
        token = self.auth.post("/token", form={"username": body["email"], "password": "password1"}).body
        return {**created.body, "token": token["access_token"]}

    def settings(self, **changes: object) -> None:
        for client in self.clients[1:]:
            runtime = runtime_of(client)
            runtime.settings = runtime.settings.model_copy(update=changes)

    def slots(
        self,
        client: FunctionClient,
        provider: dict[str, Any],
        patient: dict[str, Any],
        query: dict[str, str] = SEVEN_DAYS,
    ) -> Any:
        return client.get(f"/providers/{provider['id']}/time-slots", token=patient["token"], query=query)

    def post_availability(self, provider: dict[str, Any], body: dict[str, Any]) -> None:
        response = self.providers_a.post(
            f"/providers/{provider['id']}/availability", json_body=body, token=provider["token"]
        )
        assert response.status == 200, response.body

    def appointment(self, action: str, user: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        response = self.appointments.post(f"/appointments/{action}", json_body=body, token=user["token"])
        assert response.status in (200, 201), response.body
        result: dict[str, Any] = response.body
        return result

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    created = World(Clock(NOW))
    yield created
    created.close()


# --- hit / miss ----------------------------------------------------------------------------------


def test_x_cache_is_miss_then_hit_then_partial_and_shared_between_containers(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)

    first = world.slots(world.providers_a, provider, patient)
    assert first.headers["x-cache"] == "miss"
    second = world.slots(world.providers_a, provider, patient)
    assert second.headers["x-cache"] == "hit"
    assert second.body == first.body
    assert len(first.body) == 5 * 32

    # Another container, same Redis: what A stored is a hit for B.
    other = world.slots(world.providers_b, provider, patient)
    assert (other.headers["x-cache"], other.body) == ("hit", first.body)

    # Three of these seven days are cached (Sun 10, Mon 11, Tue 12), four are not.
    later_week = {"start_date": "2027-01-10", "end_date": "2027-01-16"}
    assert world.slots(world.providers_b, provider, patient, later_week).headers["x-cache"] == "partial"
    assert world.slots(world.providers_a, provider, patient, later_week).headers["x-cache"] == "hit"

    # The value under the documented key carries the day's tag from Postgres: the provider's
    # version and the day's, as "{slots_version}:{day version}".
    runtime = runtime_of(world.providers_a)
    wednesday = date(2027, 1, 6)
    with runtime.transaction() as session:
        slots_version = session.scalar(select(User.slots_version).where(User.id == provider["id"]))
        day_version = session.scalar(
            select(SlotDayVersion.version).where(
                SlotDayVersion.provider_id == provider["id"], SlotDayVersion.day == wednesday
            )
        )
    assert day_version is not None  # posting the week bumped it
    redis = SlotCache.from_url(runtime.settings.redis_url, ttl_seconds=1).client
    stored = json.loads(redis.get(f"provider:{provider['id']}:timeslots:2027-01-06"))
    redis.close()
    assert stored["version"] == f"{slots_version}:{day_version}"
    assert stored["starts"][0] == int(datetime(2027, 1, 6, 8, 0, tzinfo=UTC).timestamp())


def test_with_the_cache_disabled_every_listing_is_a_miss(world: World) -> None:
    world.settings(redis_url="")
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)
    first = world.slots(world.providers_a, provider, patient)
    second = world.slots(world.providers_a, provider, patient)
    assert [first.headers["x-cache"], second.headers["x-cache"]] == ["miss", "miss"]
    assert first.body == second.body and len(first.body) == 160


# --- freshness across containers -------------------------------------------------------------------


def test_after_each_committed_write_neither_container_shows_the_old_state(world: World) -> None:
    provider, patient = world.user("provider"), world.user("patient")
    world.post_availability(provider, WEEK)
    world.settings(confirmation_grace_period_minutes=10)  # holds end within the tokens' life
    containers = (world.providers_a, world.providers_b)

    def warm() -> None:
        for client in containers:
            world.slots(client, provider, patient, WEDNESDAY)
            assert world.slots(client, provider, patient, WEDNESDAY).headers["x-cache"] == "hit"

    def listed() -> list[list[str]]:
        return [starts(world.slots(client, provider, patient, WEDNESDAY)) for client in containers]

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
    after_expiry = [world.slots(client, provider, patient, WEDNESDAY) for client in containers]
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

    runtime_b = runtime_of(world.providers_b)
    racing = WriteBeforePut(runtime_b.day_store, reserve)
    runtime_b.__dict__["day_store"] = racing  # replaces the cached_property's value

    during = world.slots(world.providers_b, provider, patient, WEDNESDAY)
    assert racing.fired
    assert during.headers["x-cache"] == "miss"
    assert SLOT in starts(during)  # the slow reader began before the reservation

    next_listing = world.slots(world.providers_a, provider, patient, WEDNESDAY)
    assert next_listing.headers["x-cache"] == "miss"
    assert SLOT not in starts(next_listing)
    # That miss stored the right day: from now on both containers serve it from Redis.
    for client in (world.providers_b, world.providers_a):
        cached = world.slots(client, provider, patient, WEDNESDAY)
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
    """One providers container whose cache is a Redis the test owns, with a breaker clock
    the test moves; plus a provider with hours and a patient."""

    client: FunctionClient
    breaker_clock: FakeMonotonic
    provider: dict[str, Any]
    patient: dict[str, Any]

    @property
    def cache(self) -> SlotCache:
        store = runtime_of(self.client).day_store
        assert isinstance(store, SlotCache)
        return store

    def week(self) -> Any:
        return self.client.get(
            f"/providers/{self.provider['id']}/time-slots", token=self.patient["token"], query=SEVEN_DAYS
        )


def cached_providers(settings: Settings, redis_url: str) -> CachedProviders:
    client = FunctionClient(load_function("providers"))
    runtime = runtime_of(client)
    runtime.clock = Clock(NOW)
    runtime.settings = runtime.settings.model_copy(update={"redis_url": redis_url})
    setup = Runtime(settings, clock=Clock(NOW))
    provider_id, provider_token = create_user(setup, "provider")
    open_weekdays(setup, provider_id)
    _, patient_token = create_user(setup, "patient")
    setup.engine.dispose()
    breaker_clock = FakeMonotonic()
    store = runtime.day_store
    assert isinstance(store, SlotCache)
    store.breaker.clock = breaker_clock
    return CachedProviders(
        client, breaker_clock, {"id": provider_id, "token": provider_token}, {"token": patient_token}
    )


def test_redis_stopped_serves_from_postgres_tries_once_per_period_and_recovers(
    settings: Settings, outage_log: Records, capsys: pytest.CaptureFixture[str]
) -> None:
    with RedisServer() as server:
        world = cached_providers(settings, server.url())
        try:
            healthy = world.week()
            assert world.week().headers["x-cache"] == "hit"

            # When: Redis dies and five requests come in
            server.stop()
            capsys.readouterr()
            down = [world.week() for _ in range(5)]

            # Then: no 5xx, the same answer from Postgres, one Redis attempt, one warning, one metric
            assert [(r.status, r.headers["x-cache"]) for r in down] == [(200, "miss")] * 5
            assert all(r.body == healthy.body for r in down)
            assert world.cache.failures == 1
            assert world.cache.breaker.is_open
            assert len(outage_log.messages) == 1
            assert "Redis unavailable" in outage_log.messages[0]
            assert emitted(capsys.readouterr().out, "CacheUnavailable") == 1.0

            # When: the circuit period passes and Redis is still down: one more attempt and warning
            world.breaker_clock.advance(CIRCUIT_SECONDS)
            assert world.week().status == 200
            assert (world.cache.failures, len(outage_log.messages)) == (2, 2)
            assert emitted(capsys.readouterr().out, "CacheUnavailable") == 1.0

            # When: Redis is back and the period is over: the cache fills and serves again
            server.start()
            world.breaker_clock.advance(CIRCUIT_SECONDS)
            assert world.week().headers["x-cache"] == "miss"
            back = world.week()
            assert (back.headers["x-cache"], back.body) == ("hit", healthy.body)
            assert (world.cache.failures, len(outage_log.messages)) == (2, 2)
        finally:
            world.client.close()


def test_redis_that_accepts_and_never_answers_costs_one_short_timeout(settings: Settings, outage_log: Records) -> None:
    hanging = HangingServer()
    world = cached_providers(settings, hanging.url())
    try:
        started = time.perf_counter()
        responses = [world.week() for _ in range(5)]
        elapsed = time.perf_counter() - started

        assert [(r.status, r.headers["x-cache"]) for r in responses] == [(200, "miss")] * 5
        assert len(responses[0].body) == 5 * 32  # Wed to Fri, Mon and Tue, from Postgres
        # One connection attempt for five requests; nothing more while the circuit is open.
        assert hanging.wait_for_accepted(1) == 1
        assert hanging.wait_for_accepted(2, timeout=0.2) == 1
        assert world.cache.failures == 1
        assert len(outage_log.messages) == 1
        assert elapsed < 2.0  # sanity only: one ~0.2 s read timeout, not redis-py's 5 s default

        world.breaker_clock.advance(CIRCUIT_SECONDS)
        assert world.week().status == 200
        assert hanging.wait_for_accepted(2) == 2
        assert (world.cache.failures, len(outage_log.messages)) == (2, 2)
    finally:
        world.client.close()
        hanging.close()


# --- the scheduled cache_sync function -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_database(database_url: str) -> Iterator[str]:
    with private_database(database_url, "cache_sync") as url:
        yield url


@pytest.fixture(scope="module")
def sync_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@dataclass
class SyncWorld:
    settings: Settings
    clock: Clock
    setup: Runtime
    providers: FunctionClient
    loaded: list[ModuleType]

    def sync_container(self, redis_url: str | None = None) -> ModuleType:
        module = load_function("cache_sync")
        module.runtime.settings = self.settings.model_copy(update={"redis_url": redis_url or self.settings.redis_url})
        module.runtime.clock = self.clock
        self.loaded.append(module)
        return module

    def holds(self, provider_id: int, count: int) -> list[int]:
        ids = []
        for index in range(count):
            patient, _ = create_user(self.setup, "patient")
            start = datetime(2027, 1, 6, 9 + index // 4, 15 * (index % 4), tzinfo=UTC)
            ids.append(hold(self.setup, patient, provider_id, start))
        return ids


@pytest.fixture
def sync_world(settings: Settings, sync_database: str, sync_redis: RedisServer) -> Iterator[SyncWorld]:
    empty_tables(sync_database)
    flusher = sync_redis.client()
    flusher.flushall()
    flusher.close()
    private = settings.model_copy(
        update={"database_url": sync_database, "redis_url": sync_redis.url(), "max_active_holds": 100}
    )
    clock = Clock(NOW)
    providers = FunctionClient(load_function("providers"))
    runtime_of(providers).settings = private
    runtime_of(providers).clock = clock
    setup = Runtime(private, clock=clock)
    created = SyncWorld(private, clock, setup, providers, [])
    yield created
    providers.close()
    setup.engine.dispose()
    for module in created.loaded:
        if "engine" in module.runtime.__dict__:
            module.runtime.engine.dispose()


def invoke(module: ModuleType) -> dict[str, Any]:
    result: dict[str, Any] = module.handler(dict(SCHEDULED_EVENT), LambdaContext())
    return result


def test_the_scheduled_event_expires_stale_holds_and_returns_the_summary(sync_world: SyncWorld) -> None:
    # Given: a provider with three holds, the week cached while they were live
    provider_id, _ = create_user(sync_world.setup, "provider")
    open_weekdays(sync_world.setup, provider_id)
    _, patient_token = create_user(sync_world.setup, "patient")
    stale = sync_world.holds(provider_id, 3)
    path = f"/providers/{provider_id}/time-slots"
    held = sync_world.providers.get(path, token=patient_token, query=WEDNESDAY)
    assert "2027-01-06T09:00:00Z" not in starts(held)

    # When: the schedule fires after the deadline
    sync_world.clock.advance(minutes=30)
    summary = invoke(sync_world.sync_container())

    # Then
    assert set(summary) == {
        "expired_holds",
        "keys_checked",
        "keys_repaired",
        "keys_stale",
        "rows_purged",
        "cache_available",
        "duration_ms",
    }
    assert summary["expired_holds"] == 3
    assert summary["cache_available"] is True
    assert (summary["keys_checked"], summary["keys_stale"], summary["keys_repaired"]) == (1, 1, 0)
    freed = sync_world.providers.get(path, token=patient_token, query=WEDNESDAY)
    assert freed.headers["x-cache"] == "miss"
    assert {"2027-01-06T09:00:00Z", "2027-01-06T09:15:00Z", "2027-01-06T09:30:00Z"} <= set(starts(freed))
    assert invoke(sync_world.sync_container())["expired_holds"] == 0
    assert len(stale) == 3


def test_a_hand_corrupted_value_is_repaired_by_the_scheduled_pass(
    sync_world: SyncWorld, sync_redis: RedisServer
) -> None:
    provider_id, _ = create_user(sync_world.setup, "provider")
    open_weekdays(sync_world.setup, provider_id)
    _, patient_token = create_user(sync_world.setup, "patient")
    sync_world.holds(provider_id, 1)
    path = f"/providers/{provider_id}/time-slots"
    truth = sync_world.providers.get(path, token=patient_token, query=WEDNESDAY).body
    redis = sync_redis.client()
    key = day_key(provider_id, datetime(2027, 1, 6).date())
    value = json.loads(redis.get(key))
    value["taken"] = {}  # the hold dropped by hand: 09:00 would look free
    redis.set(key, json.dumps(value))
    corrupted = sync_world.providers.get(path, token=patient_token, query=WEDNESDAY)
    assert corrupted.headers["x-cache"] == "hit"
    assert "2027-01-06T09:00:00Z" in starts(corrupted)  # what a wrong cache looks like

    container = sync_world.sync_container()
    first, second = invoke(container), invoke(container)

    assert (first["keys_checked"], first["keys_repaired"]) == (1, 1)
    assert (second["keys_checked"], second["keys_repaired"]) == (1, 0)
    repaired = sync_world.providers.get(path, token=patient_token, query=WEDNESDAY)
    assert (repaired.headers["x-cache"], repaired.body) == ("hit", truth)
    redis.close()


def test_two_sync_containers_at_once_neither_deadlock_nor_double_count(
    sync_world: SyncWorld, sync_redis: RedisServer
) -> None:
    # Given: stale holds on two providers, and a third provider's cached week corrupted
    stale: list[int] = []
    for _ in range(2):
        provider_id, _ = create_user(sync_world.setup, "provider")
        open_weekdays(sync_world.setup, provider_id)
        stale += sync_world.holds(provider_id, 5)
    sync_world.clock.advance(minutes=30)
    cached_id, _ = create_user(sync_world.setup, "provider")
    open_weekdays(sync_world.setup, cached_id)
    _, patient_token = create_user(sync_world.setup, "patient")
    assert (
        sync_world.providers.get(f"/providers/{cached_id}/time-slots", token=patient_token, query=SEVEN_DAYS).status
        == 200
    )
    redis = sync_redis.client()
    corrupted = 0
    for key in redis.scan_iter(match=f"provider:{cached_id}:timeslots:*"):
        redis.set(key, b"garbage")
        corrupted += 1
    assert corrupted == 7

    # When: two cache_sync containers run the scheduled event at once, forced to overlap:
    # both expiry UPDATEs run before either COMMIT, both read the garbage before either
    # repairs it.
    expiry_meeting = threading.Barrier(2, timeout=10)
    read_meeting = threading.Barrier(2, timeout=10)
    containers = [sync_world.sync_container(), sync_world.sync_container()]
    for module in containers:
        runtime = module.runtime
        runtime.transaction = meeting_transaction(runtime.transaction, expiry_meeting)
        runtime.__dict__["day_store"] = MeetingCache.meeting_at(runtime.settings.redis_url, read_meeting)
    # Powertools keeps one metric set per process (Lambda runs one invocation per
    # process): the passes overlap, their metric flushes take turns.
    flush_one_at_a_time = threading.Lock()

    def pass_then_take_turns(*args: Any, **kwargs: Any) -> sync.SyncSummary:
        summary = sync.run_sync_pass(*args, **kwargs)
        flush_one_at_a_time.acquire()
        return summary

    def run(module: ModuleType) -> dict[str, Any]:
        module.__dict__["run_sync_pass"] = pass_then_take_turns  # the handler module's global
        try:
            return invoke(module)
        finally:
            flush_one_at_a_time.release()

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(run, module) for module in containers]
        summaries = [future.result(timeout=60) for future in futures]

    # Then
    assert sum(s["expired_holds"] for s in summaries) == len(stale) == 10
    assert sum(s["keys_repaired"] for s in summaries) == corrupted
    assert all(s["cache_available"] for s in summaries)
    again = invoke(sync_world.sync_container())
    assert (again["expired_holds"], again["keys_repaired"]) == (0, 0)
    redis.close()


def test_a_pass_with_redis_down_still_expires_holds(sync_world: SyncWorld) -> None:
    provider_id, _ = create_user(sync_world.setup, "provider")
    open_weekdays(sync_world.setup, provider_id)
    sync_world.holds(provider_id, 2)
    sync_world.clock.advance(minutes=30)
    with RedisServer() as server:
        container = sync_world.sync_container(server.url())
        server.stop()
        summary = invoke(container)
    assert (summary["expired_holds"], summary["cache_available"], summary["keys_checked"]) == (2, False, 0)
