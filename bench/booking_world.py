"""The fixtures of the booking suites (warm_latency, contention, throughput, scale,
http_load): providers open every day 7am-7pm New York time, patients, tokens, the events
they send, and a throwaway database with the bench environment around it all.

Every handler clock is pinned to NOW, so booking rules (24 h notice, 90-day horizon) and
tokens behave the same on every run. Not a suite: `bench/__main__.py` does not list it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from reservations.domain.availability import (
    Availability,
    WeeklyPeriod,
    WeeklyWindow,
    generate_slots,
    parse_days,
    parse_window,
)

from .common import (
    bench_environment,
    http_event,
    insert_users,
    issue_token,
    patched_environ,
    quiet,
    redis_url,
    throwaway_database,
)

ZONE = "America/New_York"
NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)  # every handler's clock
TODAY = NOW.date()
OPEN_DAYS = 120  # availability: every day 7am-7pm New York time (48 slots a day)
LIST_FIRST = TODAY + timedelta(days=2)  # past the 24 h notice
PASSWORD = "bench-password-1"  # noqa: S105 - throwaway accounts
# A reservation's two writes as sent by hand: the floors of the reserve goals (issue 15).
HOLD_EXPIRE = (
    "UPDATE appointments SET status = 'expired', updated_at = :now WHERE provider_id = :provider "
    "AND status = 'reserved' AND expires_at <= :now AND busy_start < :end AND busy_end > :start"
)
HOLD_INSERT = (
    "INSERT INTO appointments (provider_id, patient_id, start_time, end_time, status, expires_at, created_at, "
    "updated_at) VALUES (:provider, :patient, :start, :end, 'reserved', :expires, :now, :now) RETURNING id"
)


def logger(suite: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{suite}] {message}", file=sys.stderr, flush=True)

    return log


# --- availability ----------------------------------------------------------------------


def weekly_availability(first: date = TODAY, days: int = OPEN_DAYS) -> Availability:
    """Every day 7am-7pm (provider-local) for `days` days from `first`."""
    weekly = (WeeklyWindow(parse_days("M-Su"), parse_window("7am", "7pm")),)
    return Availability((WeeklyPeriod(first, first + timedelta(days=days - 1), weekly),), {}, {})


def day_slots(day_offset: int) -> list[datetime]:
    """The 48 slot starts (UTC) every bench provider offers on TODAY + day_offset."""
    day = TODAY + timedelta(days=day_offset)
    return [start for start, _ in generate_slots(weekly_availability(), ZoneInfo(ZONE), day, day)]


def slot_sequence(first_day: int, n: int) -> list[datetime]:
    slots: list[datetime] = []
    day = first_day
    while len(slots) < n:
        slots.extend(day_slots(day))
        day += 1
    return slots[:n]


# --- the world -------------------------------------------------------------------------


@dataclass
class World:
    """A suite's users, tokens and setup connections."""

    url: str
    admin: Engine
    container: Any  # a setup `reservations.composition.Container` (clock pinned)
    providers: dict[str, list[int]]
    patients: dict[str, list[int]]
    tokens: dict[int, str] = field(default_factory=dict)
    redis_providers: set[int] = field(default_factory=set)

    def token(self, user_id: int, role: str = "patient") -> str:
        if user_id not in self.tokens:
            self.tokens[user_id] = issue_token(self.container, user_id, role, NOW)
        return self.tokens[user_id]

    def post_availability(self, provider_ids: Sequence[int]) -> None:
        """Every day 7am-7pm for OPEN_DAYS, through the schedule use case, as each provider."""
        from reservations.domain.scheduling import PostedAvailability

        posted = PostedAvailability(
            weekly_availability(), frozenset(TODAY + timedelta(days=i) for i in range(OPEN_DAYS)), None
        )
        for provider_id in provider_ids:
            caller = self.container.accounts.verify(self.token(provider_id, "provider"))
            self.container.schedule.post_availability(caller, provider_id, posted)
        self.redis_providers.update(provider_ids)


def group_users(engine: Engine, role: str, groups: Mapping[str, int]) -> dict[str, list[int]]:
    timezone = ZONE if role == "provider" else "UTC"
    return {
        group: insert_users(engine, role, [f"{group}-{role}-{i}" for i in range(n)], timezone)
        for group, n in groups.items()
    }


def cleanup_redis(world: World) -> None:
    import redis

    client = redis.Redis.from_url(redis_url())
    try:
        keys = [
            key
            for key in client.scan_iter(match="provider:*:timeslots:*", count=1000)
            if int(key.split(b":")[1]) in world.redis_providers
        ]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@contextmanager
def booking_world(
    suite: str, providers: Mapping[str, int], patients: Mapping[str, int], *, without_availability: Sequence[str] = ()
) -> Iterator[World]:
    """A throwaway database with the bench environment (Redis on), the users of each
    group, and availability for every provider outside `without_availability`; dropped,
    with the Redis keys written, on exit."""
    from reservations.composition import Container

    log = logger(suite)
    log("creating a throwaway database")
    started = time.perf_counter()
    with (
        throwaway_database(f"reservations_{suite}") as url,
        patched_environ(**bench_environment(url, redis=redis_url())),
        quiet(),
    ):
        admin = create_engine(url)
        world = World(
            url, admin, Container(clock=lambda: NOW), group_users(admin, "provider", providers),
            group_users(admin, "patient", patients),
        )  # fmt: skip
        try:
            world.post_availability(
                [p for group, ids in world.providers.items() if group not in without_availability for p in ids]
            )
            yield world
        finally:
            cleanup_redis(world)
            world.container.close()
            admin.dispose()
    log(f"done in {time.perf_counter() - started:.0f} s")


# --- events ----------------------------------------------------------------------------


def reserve_event(token: str, provider_id: int, start: datetime) -> dict[str, Any]:
    body = {"provider_id": provider_id, "start_time": start.isoformat()}
    return http_event("POST", "/appointments/reserve", json_body=body, token=token)


def slot_event(action: str, token: str, appointment_id: int) -> dict[str, Any]:
    return http_event("POST", f"/appointments/{action}", json_body={"slot_id": appointment_id}, token=token)


def listing_event(token: str, provider_id: int, first: date, days: int) -> dict[str, Any]:
    query = {"start_date": first.isoformat(), "end_date": (first + timedelta(days=days - 1)).isoformat()}
    return http_event("GET", f"/providers/{provider_id}/time-slots", token=token, query=query)


def form_event(path: str, form: dict[str, str]) -> dict[str, Any]:
    event = http_event("POST", path)
    body = urlencode(form)
    event["headers"].update({"content-type": "application/x-www-form-urlencoded", "content-length": str(len(body))})
    event["body"] = body
    return event
