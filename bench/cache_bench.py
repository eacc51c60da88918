"""What the Redis slot cache buys: GET /providers/{id}/time-slots for 7 days through the
real providers Lambda handler (an API Gateway v2.0 event into `handler`), served from the
cache (X-Cache hit) and not (version bumped before every call: a miss, recomputed from
Postgres and written back; and with the cache disabled), next to a bare Redis GET and a
bare FastAPI + Mangum hello-world handler measured in the same run.

Runs against the local Postgres and Redis in a throwaway database it creates and drops.
`run()` returns tables for the `make bench` runner; `python bench/cache_bench.py` prints
them as Markdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import LambdaContext, http_event, load_function, throwaway_database

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ReservationsBench")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "reservations")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

# The same variables and defaults as the other suites (bench/common.py): the benches' own Redis database.
REDIS_URL = os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/12"
CALLS = int(os.environ.get("BENCH_CALLS", "300"))
WARMUP = 30
GOAL_RATIO = 3.0


def percentile(samples_ms: list[float], fraction: float) -> float:
    ordered = sorted(samples_ms)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def measure(call: Callable[[], Any], *, before: Callable[[], Any] | None = None, calls: int = CALLS) -> list[float]:
    """Milliseconds per call; `before` runs untimed ahead of each call."""
    for _ in range(WARMUP):
        if before:
            before()
        call()
    samples = []
    for _ in range(calls):
        if before:
            before()
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def hello_world_handlers() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """A FastAPI hello world wrapped by Mangum alone, and by the project's Powertools entry."""
    from fastapi import FastAPI
    from mangum import Mangum

    from reservations.http.lambda_entry import make_lambda_handler

    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:  # a sync route, like the project's routes
        return {"hello": "world"}

    bare: Callable[..., Any] = Mangum(app, lifespan="off")
    return bare, make_lambda_handler(app)


def setup_world(settings: Any) -> tuple[int, str]:
    """A provider open weekdays 8am-5pm for 5 weeks (some slots held), and a patient token."""
    from reservations.domain.accounts import AccountService
    from reservations.domain.availability import Availability, WeeklyPeriod, WeeklyWindow, parse_days, parse_window
    from reservations.domain.booking import BookingService
    from reservations.adapters.db import User
    from reservations.http.runtime import Runtime, booking_policy
    from reservations.domain.scheduling import PostedAvailability, ProviderSchedule

    runtime = Runtime(settings)
    now = runtime.now()
    policy = booking_policy(settings)
    try:
        with runtime.transaction() as session:
            accounts = AccountService(
                session, hasher=runtime.hasher, codec=runtime.token_codec(), policy=runtime.account_policy, now=now
            )
            password = uuid.uuid4().hex  # never used to sign in: tokens are issued directly
            provider = accounts.register(name="Bench", email="provider@bench.test", password=password, role="provider")
            patient = accounts.register(name="Pat", email="patient@bench.test", password=password, role="patient")
            provider_id, patient_id = provider.id, patient.id
        first = now.date()
        weekly = (WeeklyWindow(parse_days("M-F"), parse_window("8am", "5pm")),)
        period = WeeklyPeriod(first, first + timedelta(days=34), weekly)
        touched = frozenset(first + timedelta(days=offset) for offset in range(35))
        with runtime.transaction() as session:
            schedule = ProviderSchedule(session, policy=policy, now=now)
            schedule.post_availability(
                schedule.provider(provider_id),
                provider_id,
                PostedAvailability(Availability((period,), {}, {}), touched, None),
            )
        # Two holds three days out (past the notice period), on the hour, on a weekday.
        day = first + timedelta(days=3)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        with runtime.transaction() as session:
            booking = BookingService(session, policy=policy, now=now)
            for hour in (9, 10):
                start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
                booking.reserve(session.get_one(User, patient_id), provider_id, start)
        token = runtime.token_codec().issue_access(
            user_id=patient_id, role="patient", token_version=0, now=now, ttl=timedelta(hours=2)
        )
        return provider_id, token
    finally:
        runtime.engine.dispose()


def row(case: str, samples: list[float], baseline: list[float] | None) -> list[Any]:
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    if baseline is None:
        return [case, len(samples), round(p50, 3), round(p99, 3), "", ""]
    return [
        case,
        len(samples),
        round(p50, 3),
        round(p99, 3),
        f"{p50 / percentile(baseline, 0.50):.2f}x",
        f"{p99 / percentile(baseline, 0.99):.2f}x",
    ]


CACHED = "time-slots, 7 days, cached (X-Cache hit)"
UNCACHED = "time-slots, 7 days, uncached (version bumped: miss + write-back)"
HELLO = "hello world: FastAPI + Mangum (baseline)"


@dataclass
class Measured:
    results: list[tuple[str, list[float]]]
    slots: int
    value_bytes: int


def measure_all(settings: Any, database_url: str) -> Measured:
    import redis
    from mangum import Mangum
    from sqlalchemy import create_engine, text

    from reservations.domain.accounts import AccountService
    from reservations.http.runtime import booking_policy
    from reservations.domain.scheduling import ProviderSchedule

    provider_id, token = setup_world(settings)
    event = http_event("GET", f"/providers/{provider_id}/time-slots", token=token)  # default: today + 6 days
    providers = load_function("providers")
    providers.app.state.runtime.settings = settings
    runtime = providers.app.state.runtime
    uncached_providers = load_function("providers")
    uncached_providers.app.state.runtime.settings = settings.model_copy(update={"redis_url": ""})
    providers_without_powertools = Mangum(providers.app, lifespan="off")
    bare_hello, powertools_hello = hello_world_handlers()
    hello_event = http_event("GET", "/hello")
    context = LambdaContext()
    redis_client = redis.Redis.from_url(REDIS_URL)
    bump_engine = create_engine(database_url, pool_size=1)

    def listing(handler: Callable[..., Any], expect: str) -> Callable[[], Any]:
        def call() -> Any:
            response = handler(copy.copy(event), context)
            if response["statusCode"] != 200 or response["headers"].get("x-cache") != expect:
                raise RuntimeError(f"expected 200 and X-Cache {expect}, got {response}")
            return response

        return call

    def bump_version() -> None:
        with bump_engine.begin() as connection:
            connection.execute(
                text("UPDATE users SET slots_version = slots_version + 1 WHERE id = :id"), {"id": provider_id}
            )

    def service_only() -> None:
        with runtime.transaction() as session:
            now = runtime.now()
            AccountService(
                session, hasher=runtime.hasher, codec=runtime.token_codec(), policy=runtime.account_policy, now=now
            ).authenticate(token)
            schedule = ProviderSchedule(session, policy=booking_policy(settings), now=now, store=runtime.day_store)
            if schedule.free_slots(provider_id, None, None).days_from_store != 7:
                raise RuntimeError("expected a cache hit")

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the cold-start metric line
            first = listing(providers.handler, "miss")()
            keys = [key.decode() for key in redis_client.scan_iter(match=f"provider:{provider_id}:timeslots:*")]
            hello = measure(lambda: bare_hello(copy.copy(hello_event), context))
            results = [
                ("Redis GET, one cached day (redis-py)", measure(lambda: redis_client.get(keys[0]))),
                ("Redis MGET, the 7 cached days", measure(lambda: redis_client.mget(keys))),
                (HELLO, hello),
                (
                    "hello world: FastAPI + Mangum + Powertools",
                    measure(lambda: powertools_hello(copy.copy(hello_event), context)),
                ),
                (CACHED, measure(listing(providers.handler, "hit"))),
                (
                    "time-slots, cached, same app via bare Mangum (no Powertools)",
                    measure(listing(providers_without_powertools, "hit")),
                ),
                ("service only: token check + cached listing, one transaction", measure(service_only)),
                (UNCACHED, measure(listing(providers.handler, "miss"), before=bump_version)),
                (
                    "time-slots, 7 days, cache disabled (Postgres only)",
                    measure(listing(uncached_providers.handler, "miss")),
                ),
            ]
        return Measured(results, len(json.loads(first["body"])), len(redis_client.get(keys[0]) or b""))
    finally:
        for key in redis_client.scan_iter(match=f"provider:{provider_id}:timeslots:*"):
            redis_client.delete(key)
        redis_client.close()
        bump_engine.dispose()
        for module in (providers, uncached_providers):
            if "engine" in module.app.state.runtime.__dict__:
                module.app.state.runtime.engine.dispose()


def run() -> list[dict[str, Any]]:
    from reservations.config import load_settings

    warnings.filterwarnings("ignore", message="No application metrics to publish")
    asyncio.set_event_loop(asyncio.new_event_loop())
    started = time.perf_counter()
    with throwaway_database() as database_url:
        settings = load_settings(
            app_env="local",
            database_url=database_url,
            redis_url=REDIS_URL,
            db_pool_size=1,
            password_hash_time_cost=1,
            password_hash_memory_kib=1024,
            max_active_holds=10,
        )
        measured = measure_all(settings, database_url)
    elapsed = time.perf_counter() - started

    by_case = dict(measured.results)
    hello, cached, uncached = by_case[HELLO], by_case[CACHED], by_case[UNCACHED]
    cached_ratio = percentile(cached, 0.5) / percentile(hello, 0.5)
    cached_p99_ratio = percentile(cached, 0.99) / percentile(hello, 0.99)
    speedup = percentile(uncached, 0.5) / percentile(cached, 0.5)
    timings = {
        "title": "Slot cache: 7-day time-slots listing through the real providers handler",
        "columns": ["case", "calls", "p50 ms", "p99 ms", "p50 vs hello", "p99 vs hello"],
        "rows": [row(case, samples, None if case.startswith("Redis") else hello) for case, samples in measured.results],
        "notes": (
            f"{CALLS} timed calls per case after {WARMUP} warm-up calls, one process, handlers called in-process "
            f"with API Gateway v2.0 events (no network in front), local Postgres and Redis ({REDIS_URL}). The "
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


def markdown(table: dict[str, Any]) -> str:
    lines = [f"### {table['title']}", "", "| " + " | ".join(table["columns"]) + " |"]
    lines.append("|" + "|".join(" --- " for _ in table["columns"]) + "|")
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table["rows"]]
    if table.get("notes"):
        lines += ["", table["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(markdown(table) for table in run()))
