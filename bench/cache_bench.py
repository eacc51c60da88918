"""What the Redis slot cache buys: GET /providers/{id}/time-slots for 7 days through the
real providers Lambda handler (an API Gateway v2.0 event into `handler`), served from the
cache (X-Cache hit) and not (version bumped before every call: a miss, recomputed from
Postgres and written back; and with the cache disabled), next to a bare Redis GET and a
bare FastAPI + Mangum hello-world handler measured in the same run.

Runs against the local Postgres and Redis in a throwaway database it creates and drops.
`run()` returns tables for the `make bench` runner; `python -m bench.cache_bench` prints
them as Markdown.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .common import (
    Table,
    Timing,
    bench_environment,
    hello_handlers,
    http_event,
    invoke,
    issue_token,
    load_function,
    markdown,
    measure,
    measure_prepared,
    patched_environ,
    quiet,
    redis_url,
    release_function,
    throwaway_database,
)

CALLS = int(os.environ.get("BENCH_CALLS", "300"))
WARMUP = 30
GOAL_RATIO = 3.0


def setup_world() -> tuple[int, str]:
    """A provider open weekdays 8am-5pm for 5 weeks (some slots held), and a patient
    token, through the account, schedule and booking use cases."""
    from reservations.composition import Container
    from reservations.domain.availability import Availability, WeeklyPeriod, WeeklyWindow, parse_days, parse_window
    from reservations.domain.scheduling import PostedAvailability

    container = Container()
    now = container.now()
    try:
        password = uuid.uuid4().hex  # never used to sign in: tokens are issued directly
        register = container.accounts.register
        provider = register(None, name="Bench", email="provider@bench.test", password=password, role="provider",
                            timezone="UTC")  # fmt: skip
        patient = register(None, name="Pat", email="patient@bench.test", password=password, role="patient",
                           timezone="UTC")  # fmt: skip
        provider_token = issue_token(container, provider.id, "provider", now, timedelta(hours=2))
        token = issue_token(container, patient.id, "patient", now, timedelta(hours=2))
        first = now.date()
        weekly = (WeeklyWindow(parse_days("M-F"), parse_window("8am", "5pm")),)
        period = WeeklyPeriod(first, first + timedelta(days=34), weekly)
        touched = frozenset(first + timedelta(days=offset) for offset in range(35))
        container.schedule.post_availability(
            container.accounts.verify(provider_token),
            provider.id,
            PostedAvailability(Availability((period,), {}, {}), touched, None),
        )
        # Two holds three days out (past the notice period), on the hour, on a weekday.
        day = first + timedelta(days=3)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        caller = container.accounts.verify(token)
        for hour in (9, 10):
            start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
            container.booking.reserve(caller, provider_id=provider.id, start_time=start)
        return provider.id, token
    finally:
        container.close()


def row(case: str, timing: Timing, baseline: Timing | None) -> list[Any]:
    p50, p99 = timing.p50_ns / 1e6, timing.p99_ns / 1e6
    if baseline is None:
        return [case, timing.runs, round(p50, 3), round(p99, 3), "", ""]
    return [
        case,
        timing.runs,
        round(p50, 3),
        round(p99, 3),
        f"{timing.p50_ns / baseline.p50_ns:.2f}x",
        f"{timing.p99_ns / baseline.p99_ns:.2f}x",
    ]


CACHED = "time-slots, 7 days, cached (X-Cache hit)"
UNCACHED = "time-slots, 7 days, uncached (version bumped: miss + write-back)"
HELLO = "hello world: FastAPI + Mangum (baseline)"


@dataclass
class Measured:
    results: list[tuple[str, Timing]]
    slots: int
    value_bytes: int


def measure_all(database_url: str) -> Measured:
    import redis
    from mangum import Mangum
    from sqlalchemy import create_engine, text

    provider_id, token = setup_world()
    event = http_event("GET", f"/providers/{provider_id}/time-slots", token=token)  # default: today + 6 days
    providers = load_function("providers")  # real clocks, as the setup above
    container = providers.container
    with patched_environ(REDIS_URL=""):
        uncached_providers = load_function("providers")
    providers_without_powertools = Mangum(providers.app, lifespan="off")
    bare_hello, powertools_hello = hello_handlers()
    hello_event = http_event("GET", "/hello")
    redis_client = redis.Redis.from_url(redis_url())
    bump_engine = create_engine(database_url, pool_size=1)

    def timed(call: Callable[[], Any]) -> Timing:
        return measure(call, runs=CALLS, warmup=WARMUP)

    def listing(handler: Callable[..., Any], expect: str) -> Callable[..., Any]:
        def call(_: Any = None) -> Any:
            response = invoke(handler, event)
            if response["statusCode"] != 200 or response["headers"].get("x-cache") != expect:
                raise RuntimeError(f"expected 200 and X-Cache {expect}, got {response}")
            return response

        return call

    def bump_version() -> None:
        with bump_engine.begin() as connection:
            connection.execute(
                text("UPDATE users SET slots_version = slots_version + 1 WHERE id = :id"), {"id": provider_id}
            )

    def use_case_only() -> None:
        caller = container.accounts.verify(token)
        if container.schedule.free_slots(caller, provider_id, None, None).days_from_store != 7:
            raise RuntimeError("expected a cache hit")

    try:
        first = listing(providers.handler, "miss")()
        keys = [key.decode() for key in redis_client.scan_iter(match=f"provider:{provider_id}:timeslots:*")]
        results = [
            ("Redis GET, one cached day (redis-py)", timed(lambda: redis_client.get(keys[0]))),
            ("Redis MGET, the 7 cached days", timed(lambda: redis_client.mget(keys))),
            (HELLO, timed(lambda: invoke(bare_hello, hello_event))),
            ("hello world: FastAPI + Mangum + Powertools", timed(lambda: invoke(powertools_hello, hello_event))),
            (CACHED, timed(listing(providers.handler, "hit"))),
            (
                "time-slots, cached, same app via bare Mangum (no Powertools)",
                timed(listing(providers_without_powertools, "hit")),
            ),
            ("use case only: token check + cached listing, one transaction", timed(use_case_only)),
            (UNCACHED, measure_prepared(bump_version, listing(providers.handler, "miss"), runs=CALLS, warmup=WARMUP)),
            ("time-slots, 7 days, cache disabled (Postgres only)", timed(listing(uncached_providers.handler, "miss"))),
        ]
        return Measured(results, len(json.loads(first["body"])), len(redis_client.get(keys[0]) or b""))
    finally:
        for key in redis_client.scan_iter(match=f"provider:{provider_id}:timeslots:*"):
            redis_client.delete(key)
        redis_client.close()
        bump_engine.dispose()
        for module in (providers, uncached_providers):
            release_function(module)


def run() -> list[Table]:
    started = time.perf_counter()
    with throwaway_database() as database_url:
        environment = bench_environment(database_url, redis=redis_url(), APP_ENV="local", MAX_ACTIVE_HOLDS="10")
        with patched_environ(**environment), quiet():
            measured = measure_all(database_url)
    elapsed = time.perf_counter() - started

    by_case = dict(measured.results)
    hello, cached, uncached = by_case[HELLO], by_case[CACHED], by_case[UNCACHED]
    cached_ratio = cached.p50_ns / hello.p50_ns
    cached_p99_ratio = cached.p99_ns / hello.p99_ns
    speedup = uncached.p50_ns / cached.p50_ns
    timings = {
        "title": "Slot cache: 7-day time-slots listing through the real providers handler",
        "columns": ["case", "calls", "p50 ms", "p99 ms", "p50 vs hello", "p99 vs hello"],
        "rows": [row(case, samples, None if case.startswith("Redis") else hello) for case, samples in measured.results],
        "notes": (
            f"{CALLS} timed calls per case after {WARMUP} warm-up calls, one process, handlers called in-process "
            f"with API Gateway v2.0 events (no network in front), local Postgres and Redis ({redis_url()}). The "
            f"listing returns {measured.slots} slots from 7 days; one cached day is {measured.value_bytes} bytes "
            "of JSON. Every listing also checks its bearer token (JWT + user row) and reads the provider row in "
            f"Postgres; 'uncached' bumps users.slots_version before each call (untimed). Whole run: {elapsed:.1f} s."
        ),
    }
    goal = {
        "title": "Slot cache goal",
        "columns": ["goal", "measured", "met"],
        "rows": [
            [
                f"cached 7-day listing within {GOAL_RATIO:g}x hello-world (p50)",
                f"{cached_ratio:.2f}x",
                "yes" if cached_ratio <= GOAL_RATIO else "no",
            ],
            [
                f"cached 7-day listing within {GOAL_RATIO:g}x hello-world (p99)",
                f"{cached_p99_ratio:.2f}x",
                "yes" if cached_p99_ratio <= GOAL_RATIO else "no",
            ],
            ["cached listing faster than uncached (p50)", f"{speedup:.2f}x faster", "yes" if speedup > 1 else "no"],
        ],
        "notes": "hello world = FastAPI + Mangum(lifespan='off') with no Powertools, measured in the same run.",
    }
    return [timings, goal]


if __name__ == "__main__":
    print("\n\n".join(markdown(table) for table in run()))
