"""Issue 6's load section: latency, contention, throughput, scale and HTTP load.

1. Warm latency of the real Lambda handlers (an API Gateway v2 event into `handler`,
   in-process, one call at a time): time-slots for 7 days cached, missed and with the
   cache disabled; reserve, confirm, cancel; POST /token with argon2id at the production
   cost (and at the test cost). Baselines from the same run: a hello-world FastAPI +
   Mangum handler (bare, and behind the project's Powertools wrapper), a Redis GET with
   the handler's own client and a Postgres `SELECT 1` through the handler's pool
   (`Runtime.engine`).
2. Contention: 150 patients reserve one slot at once (threads released by a barrier)
   through several appointments containers; exactly one must win. A few rounds.
3. Throughput: reservations per second of 8 concurrent clients on distinct slots (one
   popular provider, and one provider each; 8 containers as threads of this process, and
   as 8 processes), next to the same INSERT sent by 8 threads straight through pg8000.
4. Scale: uncached 31-day time-slots with 0 and with 1,000,000 appointments in the table.
5. HTTP load through the local API gateway (`reservations_dev.server`, template.yaml's
   routes) on 127.0.0.1: 20 clients, in a separate process, list / reserve / confirm /
   cancel for `BENCH_LOAD_SECONDS` (default 60), next to the same gateway serving a
   hello-world function.

`python -m bench.load_bench` is the helper process of sections 3 and 5 (config on stdin).
Every handler clock is pinned to NOW, so booking rules (24 h notice, 90-day horizon) and
tokens behave the same on every run. Everything runs in a throwaway database that is
dropped at the end; the Redis keys written are deleted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from reservations.domain.availability import (
    Availability,
    WeeklyPeriod,
    WeeklyWindow,
    generate_slots,
    parse_days,
    parse_window,
)

from .common import (
    REPO,
    Table,
    Timing,
    bench_environment,
    count,
    http_event,
    invoke,
    load_function,
    measure,
    ms,
    patched_environ,
    percentile,
    quiet,
    ratio,
    redis_url,
    release_function,
    table,
    throwaway_database,
)

ZONE = "America/New_York"
NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)  # every handler's clock
TODAY = NOW.date()
OPEN_DAYS = 120  # availability: every day 7am-7pm New York time (48 slots a day)
TOKEN_TTL = timedelta(hours=12)
PASSWORD = "bench-password-1"  # noqa: S105 - throwaway accounts
NO_HASH = "not-a-hash"  # accounts that never sign in (tokens are issued directly)

LATENCY_RUNS, TOKEN_RUNS, TOKEN_PROD_RUNS, LISTING_RUNS = 200, 100, 20, 100
CONTENDERS, CONTENTION_ROUNDS = 150, 5
CONTENTION_CONTAINERS, CONTENTION_POOL = 4, 10  # 40 connections: the server allows 100 in all
THROUGHPUT_CLIENTS, THROUGHPUT_EACH = 8, 60
DRIVER_EACH = 300
SCALE_ROWS, SCALE_PROVIDERS, SCALE_PATIENTS = 1_000_000, 1_000, 20_000
SCALE_DAYS, SCALE_PAST_DAYS = 730, 640  # bulk rows: 32 quarter hours a day, NOW - 640 d .. NOW + 90 d
SCALE_GOAL = 1.5
LIST_FIRST = TODAY + timedelta(days=2)  # past the 24 h notice
LOAD_CLIENTS, LOAD_PROVIDERS = 20, 10
LOAD_BASELINE_SECONDS = 10.0
GATEWAY_POOL = "10"  # DB_POOL_SIZE of `make dev`
RESERVE_CASE = "POST /appointments/reserve"


def log(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


def load_seconds() -> float:
    return float(os.environ.get("BENCH_LOAD_SECONDS") or 60)


# --- timing helpers --------------------------------------------------------------------


def measure_prepared[T](prepare: Callable[[], T], call: Callable[[T], object], *, runs: int, warmup: int = 3) -> Timing:
    """Like common.measure, with an untimed `prepare()` before each call (a fresh slot,
    the next appointment id, a bumped cache version)."""
    for _ in range(warmup):
        call(prepare())
    gc.collect()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        argument = prepare()
        started = clock()
        call(argument)
        samples.append(clock() - started)
    return Timing(tuple(samples))


def spread(values: Sequence[float]) -> str:
    """min / median / max in milliseconds, from nanoseconds."""
    if not values:
        return "n/a"
    return f"{min(values) / 1e6:.0f} / {statistics.median(values) / 1e6:.0f} / {max(values) / 1e6:.0f}"


# --- fixtures --------------------------------------------------------------------------


def insert_users(engine: Engine, role: str, prefix: str, n: int, *, password_hash: str = NO_HASH) -> list[int]:
    with engine.begin() as connection:
        rows = connection.execute(
            text(
                "INSERT INTO users (name, email, role, password_hash, timezone) "
                "SELECT :prefix || '-' || g, :prefix || '-' || g || '@bench.example', :role, :hash, :tz "
                "FROM generate_series(0, :n - 1) AS g ORDER BY g RETURNING id"
            ),
            {
                "prefix": prefix,
                "role": role,
                "hash": password_hash,
                "n": n,
                "tz": ZONE if role == "provider" else "UTC",
            },
        )
        return sorted(row[0] for row in rows)


def weekly_availability() -> Availability:
    weekly = (WeeklyWindow(parse_days("M-Su"), parse_window("7am", "7pm")),)
    return Availability((WeeklyPeriod(TODAY, TODAY + timedelta(days=OPEN_DAYS - 1), weekly),), {}, {})


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


def post_availability(runtime: Any, provider_ids: Sequence[int]) -> None:
    from reservations.domain.scheduling import PostedAvailability, ProviderSchedule
    from reservations.http.runtime import booking_policy

    availability = weekly_availability()
    touched = frozenset(TODAY + timedelta(days=i) for i in range(OPEN_DAYS))
    for provider_id in provider_ids:
        with runtime.transaction() as session:
            schedule = ProviderSchedule(session, policy=booking_policy(runtime.settings), now=NOW)
            schedule.post_availability(
                schedule.provider(provider_id), provider_id, PostedAvailability(availability, touched, None)
            )


def pin_clock(module: ModuleType) -> ModuleType:
    module.app.state.runtime.clock = lambda: NOW
    return module


def container(name: str, **environment: str) -> ModuleType:
    """A fresh, clock-pinned function container, with extra variables while it loads
    (settings are read at import)."""
    with patched_environ(**environment):
        module = load_function(name)
    return pin_clock(module)


@dataclass
class World:
    """The users, tokens and setup connections every section shares."""

    url: str
    admin: Engine
    runtime: Any  # a setup Runtime (clock pinned)
    providers: dict[str, list[int]]
    patients: dict[str, list[int]]
    tokens: dict[int, str] = field(default_factory=dict)
    redis_providers: set[int] = field(default_factory=set)

    def token(self, user_id: int, role: str = "patient") -> str:
        if user_id not in self.tokens:
            self.tokens[user_id] = str(
                self.runtime.token_codec().issue_access(
                    user_id=user_id, role=role, token_version=0, now=NOW, ttl=TOKEN_TTL
                )
            )
        return self.tokens[user_id]


PROVIDER_GROUPS = {"list": 1, "latency": 1, "contention": 1, "hot": 1, "own": THROUGHPUT_CLIENTS, "hot_p": 1,
                   "own_p": THROUGHPUT_CLIENTS, "driver": THROUGHPUT_CLIENTS, "gateway": LOAD_PROVIDERS}  # fmt: skip
PATIENT_GROUPS = {"latency": 150, "contention": CONTENDERS, "hot": THROUGHPUT_CLIENTS * 30,
                  "own": THROUGHPUT_CLIENTS * 30, "hot_p": THROUGHPUT_CLIENTS * 30, "own_p": THROUGHPUT_CLIENTS * 30,
                  "driver": THROUGHPUT_CLIENTS, "gateway": LOAD_CLIENTS}  # fmt: skip


def build_world(url: str) -> World:
    from reservations.config import settings_from_environment
    from reservations.http.runtime import Runtime

    admin = create_engine(url)
    providers = {group: insert_users(admin, "provider", f"{group}-provider", n) for group, n in PROVIDER_GROUPS.items()}
    patients = {group: insert_users(admin, "patient", f"{group}-patient", n) for group, n in PATIENT_GROUPS.items()}
    runtime = Runtime(settings_from_environment(), clock=lambda: NOW)
    with_availability = [p for group, ids in providers.items() if group != "driver" for p in ids]
    post_availability(runtime, with_availability)
    return World(url, admin, runtime, providers, patients, redis_providers=set(with_availability))


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


# --- handler calls ---------------------------------------------------------------------


def body_of(response: dict[str, Any]) -> Any:
    raw = response.get("body") or ""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def code_of(response: dict[str, Any]) -> str:
    body = body_of(response)
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def call(handler: Callable[..., dict[str, Any]], event: dict[str, Any], expect: int = 200) -> dict[str, Any]:
    response = invoke(handler, event)
    if response["statusCode"] != expect:
        raise RuntimeError(f"{event['routeKey']} answered {response['statusCode']}: {response.get('body')}")
    return response


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


def hello_handlers() -> tuple[Callable[..., dict[str, Any]], Callable[..., dict[str, Any]]]:
    """A hello-world FastAPI app behind bare Mangum, and behind the project's wrapper
    (Mangum + Powertools logger, metrics and tracer) that every function uses."""
    from fastapi import FastAPI
    from mangum import Mangum

    from reservations.http.lambda_entry import make_lambda_handler

    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:  # a sync route, like the project's routes
        return {"hello": "world"}

    return Mangum(app, lifespan="off"), make_lambda_handler(app)


# --- 1. warm latency -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    timing: Timing
    baseline: bool = False


def baseline_cases(providers: ModuleType, world: World) -> list[Case]:
    from reservations.adapters.slot_cache import day_key

    log("latency: baselines")
    bare_hello, wrapped_hello = hello_handlers()
    hello_event = http_event("GET", "/hello")
    cases = [
        Case("hello world: FastAPI + Mangum",
             measure(lambda: call(bare_hello, hello_event), runs=LATENCY_RUNS, warmup=10), True),
        Case("hello world: FastAPI + Mangum + Powertools (the functions' wrapper)",
             measure(lambda: call(wrapped_hello, hello_event), runs=LATENCY_RUNS, warmup=10), True),
    ]  # fmt: skip
    runtime = providers.app.state.runtime
    (list_provider,) = world.providers["list"]
    call(providers.handler, listing_event(world.token(world.patients["latency"][0]), list_provider, LIST_FIRST, 7))
    client = runtime.day_store.client  # the slot cache's redis-py client, filled by the listing above
    key = day_key(list_provider, LIST_FIRST)
    if client.get(key) is None:
        raise RuntimeError(f"expected {key} in Redis after a listing")
    cases.append(Case("Redis GET of one cached day (the handler's client)",
                      measure(lambda: client.get(key), runs=LATENCY_RUNS, warmup=10), True))  # fmt: skip

    def select_one() -> None:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1")).scalar_one()

    cases.append(Case("Postgres SELECT 1 through Runtime.engine (checkout: pre-ping, BEGIN, query, ROLLBACK)",
                      measure(select_one, runs=LATENCY_RUNS, warmup=10), True))  # fmt: skip
    with runtime.engine.connect() as held:
        one_trip = measure(lambda: held.exec_driver_sql("SELECT 1").scalar_one(), runs=LATENCY_RUNS, warmup=10)
        cases.append(Case("Postgres SELECT 1 on a held connection (one round trip)", one_trip, True))
        held.rollback()
    return cases


def listing_cases(providers: ModuleType, uncached: ModuleType, world: World) -> list[Case]:
    log("latency: time-slots")
    (list_provider,) = world.providers["list"]
    week = listing_event(world.token(world.patients["latency"][0]), list_provider, LIST_FIRST, 7)

    def listing(handler: Callable[..., dict[str, Any]], expect: str) -> Callable[[Any], None]:
        def run(_: Any = None) -> None:
            response = call(handler, week)
            if response["headers"].get("x-cache") != expect:
                raise RuntimeError(f"expected X-Cache {expect}, got {response['headers'].get('x-cache')}")

        return run

    def bump() -> None:
        with world.admin.begin() as connection:
            connection.execute(
                text("UPDATE users SET slots_version = slots_version + 1 WHERE id = :id"), {"id": list_provider}
            )

    return [
        Case("GET time-slots, 7 days, cached (X-Cache: hit)",
             measure(listing(providers.handler, "hit"), runs=LATENCY_RUNS, warmup=10)),
        Case("GET time-slots, 7 days, uncached: miss + write-back (version bumped, untimed)",
             measure_prepared(bump, listing(providers.handler, "miss"), runs=LATENCY_RUNS, warmup=10)),
        Case("GET time-slots, 7 days, cache disabled (Postgres only)",
             measure(listing(uncached.handler, "miss"), runs=LATENCY_RUNS, warmup=10)),
    ]  # fmt: skip


def write_cases(appointments: ModuleType, world: World) -> list[Case]:
    """Reserve new slots, then confirm those holds, then cancel those appointments."""
    log("latency: reserve, confirm, cancel")
    (provider,) = world.providers["latency"]
    patients = world.patients["latency"]
    total = LATENCY_RUNS + 3  # measure_prepared's warm-up calls take 3 more
    reservations = iter(
        [
            reserve_event(world.token(patients[k % len(patients)]), provider, start)
            for k, start in enumerate(slot_sequence(2, total))
        ]
    )
    held: list[tuple[str, int]] = []

    def reserve(event: dict[str, Any]) -> None:
        appointment_id = int(body_of(call(appointments.handler, event, 201))["id"])
        held.append((event["headers"]["authorization"].removeprefix("Bearer "), appointment_id))

    def act(event: dict[str, Any]) -> None:
        call(appointments.handler, event)

    cases = [Case(RESERVE_CASE, measure_prepared(lambda: next(reservations), reserve, runs=LATENCY_RUNS))]
    confirms = iter([slot_event("confirm", token, appointment_id) for token, appointment_id in held])
    cases.append(Case("POST /appointments/confirm (own hold)", measure_prepared(lambda: next(confirms), act,
                                                                                runs=LATENCY_RUNS)))  # fmt: skip
    cancels = iter([slot_event("cancel", token, appointment_id) for token, appointment_id in held])
    cases.append(Case("POST /appointments/cancel (own confirmed appointment)",
                      measure_prepared(lambda: next(cancels), act, runs=LATENCY_RUNS)))  # fmt: skip
    return cases


def token_cases(auth: ModuleType, world: World) -> list[Case]:
    from reservations.adapters.security import PasswordHasher

    log("latency: /token (argon2id at the production cost, then the test cost)")
    production = PasswordHasher()  # the Settings defaults: time_cost=3, memory 64 MiB
    cheap = auth.app.state.runtime.hasher  # the bench environment's test cost
    insert_users(world.admin, "patient", "token-prod", 1, password_hash=production.hash(PASSWORD))
    insert_users(world.admin, "patient", "token-test", 1, password_hash=cheap.hash(PASSWORD))
    prod = form_event("/token", {"username": "token-prod-0@bench.example", "password": PASSWORD})
    test = form_event("/token", {"username": "token-test-0@bench.example", "password": PASSWORD})
    return [
        Case("POST /token, argon2id production cost (t=3, m=64 MiB, p=1)",
             measure(lambda: call(auth.handler, prod), runs=TOKEN_PROD_RUNS, warmup=2)),
        Case("POST /token, argon2id test cost (t=1, m=1 MiB)", measure(lambda: call(auth.handler, test),
                                                                      runs=TOKEN_RUNS)),
    ]  # fmt: skip


def latency_cases(world: World) -> list[Case]:
    providers = container("providers")
    uncached = container("providers", REDIS_URL="")
    appointments = container("appointments")
    auth = container("auth")
    try:
        return [
            *baseline_cases(providers, world),
            *listing_cases(providers, uncached, world),
            *write_cases(appointments, world),
            *token_cases(auth, world),
        ]
    finally:
        for module in (providers, uncached, appointments, auth):
            release_function(module)


def latency_table(cases: list[Case]) -> Table:
    hello = cases[0].timing
    rows = [
        [("baseline: " if c.baseline else "") + c.name, c.timing.runs, ms(c.timing.p50_ns, 3), ms(c.timing.p99_ns, 3),
         ms(c.timing.mean_ns, 3), ratio(c.timing.p50_ns, hello.p50_ns), ratio(c.timing.p99_ns, hello.p99_ns)]
        for c in cases
    ]  # fmt: skip
    return table(
        "1. Warm handler latency: API Gateway v2 event into the real handler, one call at a time",
        ["case", "runs", "p50 ms", "p99 ms", "mean ms", "p50 vs hello", "p99 vs hello"],
        rows,
        "In-process calls of `handler(event, context)`, warm containers (fresh modules), handler clocks pinned to "
        f"{NOW.isoformat()}; local Postgres and Redis ({redis_url()}), pool of 1 connection per container "
        "(the Lambda setting). Warm-up calls are not recorded (3, 10 for reads). 'hello' is the bare FastAPI + "
        "Mangum app. Every time-slots call also checks its JWT and reads the user and provider rows in Postgres; "
        "the 7 days start 2 days after NOW; 'miss' bumps users.slots_version before each call (untimed), so the "
        "handler recomputes from Postgres and writes the 7 days back. Reserve takes a new slot of one provider "
        "each call (patients rotate, so the 3-hold limit is never reached); confirm and cancel act on those holds "
        "in order. POST /token verifies argon2id at the cost stored in the user's hash: the production row uses "
        "the Settings defaults (time_cost=3, memory 64 MiB, parallelism 1) and dominates the call, the test row "
        "the bench's cheap cost; both also insert a refresh token. The engine row pays what every request pays "
        "per checkout: pool_pre_ping's `SELECT 1` (inside pg8000's implicit BEGIN), then the query, then the "
        "pool's ROLLBACK on return - 4 round trips for one useful one.",
    )


# --- 2. contention ---------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    started_ns: int
    answers: list[tuple[int, str, int, Any]]  # status, code, finished_ns, body

    @property
    def winners(self) -> int:
        return sum(1 for status, *_ in self.answers if status == 201)

    @property
    def all_answered_ns(self) -> int:
        return max(done for _, _, done, _ in self.answers) - self.started_ns

    @property
    def latencies_ns(self) -> list[int]:
        return [done - self.started_ns for _, _, done, _ in self.answers]

    def outcome(self) -> Counter[str]:
        return Counter(f"{status} {code}".strip() for status, code, _, _ in self.answers)


def together(pool: concurrent.futures.ThreadPoolExecutor, calls: Sequence[Callable[[], dict[str, Any]]]) -> Round:
    """Run the calls at once (a barrier releases every thread); time to each answer."""
    release: list[int] = []
    barrier = threading.Barrier(len(calls), action=lambda: release.append(time.perf_counter_ns()), timeout=60)

    def run(task: Callable[[], dict[str, Any]]) -> tuple[int, str, int, Any]:
        barrier.wait()
        try:
            response = task()
        except Exception as error:  # a raising handler is a 5xx at API Gateway
            return 599, f"raised {type(error).__name__}: {error}", time.perf_counter_ns(), None
        return response["statusCode"], code_of(response), time.perf_counter_ns(), body_of(response)

    futures = [pool.submit(run, task) for task in calls]
    answers = [future.result(timeout=120) for future in futures]
    return Round(release[0], answers)


def active_rows(engine: Engine, provider_id: int, start: datetime) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM appointments WHERE provider_id = :p AND start_time = :t "
                    "AND status IN ('reserved', 'confirmed')"
                ),
                {"p": provider_id, "t": start},
            ).scalar_one()
        )


@dataclass
class Contention:
    rounds: list[tuple[datetime, Round, int]]  # slot, round, active rows in Postgres after it
    select_rounds: list[Round]
    hello_rounds: list[Round]


def run_contention(world: World) -> Contention:
    (provider_id,) = world.providers["contention"]
    tokens = [world.token(patient) for patient in world.patients["contention"]]
    containers = [container("appointments", DB_POOL_SIZE=str(CONTENTION_POOL)) for _ in range(CONTENTION_CONTAINERS)]
    _, wrapped_hello = hello_handlers()
    hello_event = http_event("GET", "/hello")
    slots = day_slots(3)
    result = Contention([], [], [])
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=CONTENDERS, thread_name_prefix="reserver") as pool:

            def select_one(engine: Engine) -> dict[str, Any]:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1")).scalar_one()
                return {"statusCode": 200}

            for number in range(CONTENTION_ROUNDS + 1):  # round 0 warms pools, loops and threads
                slot = slots[number]
                calls = [  # events built before the barrier: only the handler call races
                    partial(invoke, containers[i % len(containers)].handler, reserve_event(token, provider_id, slot))
                    for i, token in enumerate(tokens)
                ]
                outcome = together(pool, calls)
                rows = active_rows(world.admin, provider_id, slot)
                log(f"contention round {number}: {outcome.winners} winner(s), {rows} active row(s), "
                    f"all answered in {outcome.all_answered_ns / 1e6:.0f} ms; {dict(outcome.outcome())}")  # fmt: skip
                if number:
                    result.rounds.append((slot, outcome, rows))
                for i, (status, _, _, body) in enumerate(outcome.answers):
                    if status == 201:  # free the winner's hold (untimed), so no patient nears the limit
                        call(containers[0].handler, slot_event("cancel", tokens[i], int(body["id"])))
                engines = [c.app.state.runtime.engine for c in containers]
                result.select_rounds.append(
                    together(pool, [partial(select_one, engines[i % len(engines)]) for i in range(CONTENDERS)])
                )
                result.hello_rounds.append(together(pool, [lambda: invoke(wrapped_hello, hello_event)] * CONTENDERS))
    finally:
        for module in containers:
            release_function(module)
    result.select_rounds.pop(0)
    result.hello_rounds.pop(0)
    return result


def contention_table(result: Contention, single_reserve: Timing) -> Table:
    rows = []
    failures = []
    for number, (slot, outcome, active) in enumerate(result.rounds, start=1):
        counts = outcome.outcome()
        fives = sum(n for key, n in counts.items() if key.startswith("5"))
        ok = outcome.winners == 1 and active == 1 and fives == 0
        if not ok:
            failures.append(number)
        others = ", ".join(
            f"{key}: {n}" for key, n in sorted(counts.items()) if key not in ("201", "409 slot_unavailable")
        )
        rows.append([
            f"round {number} ({slot:%Y-%m-%d %H:%M}Z)", outcome.winners, active, counts.get("409 slot_unavailable", 0),
            others or "-", fives, f"{outcome.all_answered_ns / 1e6:.0f}",
            f"{percentile(outcome.latencies_ns, 50) / 1e6:.0f}", "ok" if ok else "FAIL",
        ])  # fmt: skip

    def summary(label: str, answered: str, median: str = "") -> list[str]:
        return [label, "", "", "", "", "", answered, median, ""]

    def median_answer(rounds: list[Round]) -> str:
        return f"{statistics.median(percentile(r.latencies_ns, 50) for r in rounds) / 1e6:.0f}"

    rows += [
        summary("reserve: min / median / max over rounds", spread([o.all_answered_ns for _, o, _ in result.rounds])),
        summary(f"reference: {CONTENDERS} x one uncontended reserve (section 1 p50), back to back",
                f"{CONTENDERS * single_reserve.p50_ns / 1e6:.0f}"),
        summary(f"baseline: {CONTENDERS} x SELECT 1 through the same pools",
                spread([r.all_answered_ns for r in result.select_rounds]), median_answer(result.select_rounds)),
        summary(f"baseline: {CONTENDERS} x hello-world handler (no I/O)",
                spread([r.all_answered_ns for r in result.hello_rounds]), median_answer(result.hello_rounds)),
    ]  # fmt: skip
    verdict = "every round had exactly one winner" if not failures else f"FAIL in rounds {failures}"
    return table(
        f"2. Contention: {CONTENDERS} patients reserve the same slot at once ({verdict})",
        ["round", "winners (201)", "active rows in Postgres", "409 slot_unavailable", "other answers", "5xx",
         "all answered ms", "median answer ms", "check"],
        rows,
        f"{CONTENDERS} threads released by one barrier, each calling the real appointments handler with its own "
        f"patient's token; {CONTENTION_CONTAINERS} containers with a pool of {CONTENTION_POOL} connections each "
        f"({CONTENTION_CONTAINERS * CONTENTION_POOL} in all: this Postgres allows 100 connections, shared with "
        "everything else on the machine), so requests also queue for a connection. A warm-up round (not shown) "
        "opens the connections first. 'all answered' runs from the barrier's release to the last response; "
        "min / median / max are over the rounds. The winner's hold is cancelled after each round (untimed). "
        "Baselines: the same threads doing a bare `SELECT 1` through the same pools, and calling a hello-world "
        "handler (GIL and thread start-up only). Check: exactly one 201, exactly one active row, no 5xx.",
    )  # fmt: skip


# --- 3. throughput ---------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    name: str
    done: int
    seconds: float
    latencies_ns: list[int]
    outcome: Counter[str]

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


def run_clients(
    clients: int, work: Callable[[int], Iterator[Callable[[], str]]]
) -> tuple[float, list[int], Counter[str], int]:
    """`clients` threads released together; each runs the calls `work(index)` yields
    (built beforehand, untimed) one after another; a call returns its outcome label.
    Returns (seconds, latencies, outcomes, successes: 201s and driver 'ok's)."""
    tasks = [list(work(index)) for index in range(clients)]
    barrier = threading.Barrier(clients + 1, timeout=60)
    lock = threading.Lock()
    latencies: list[int] = []
    outcome: Counter[str] = Counter()
    finished: list[int] = []

    def client(mine: list[Callable[[], str]]) -> None:
        barrier.wait()
        for task in mine:
            started = time.perf_counter_ns()
            try:
                label = task()
            except Exception as error:  # counted, not fatal: the table shows it
                label = f"raised {type(error).__name__}"
            elapsed = time.perf_counter_ns() - started
            with lock:
                latencies.append(elapsed)
                outcome[label] += 1
        with lock:
            finished.append(time.perf_counter_ns())

    threads = [threading.Thread(target=client, args=(mine,), name=f"client-{i}") for i, mine in enumerate(tasks)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter_ns()
    for thread in threads:
        thread.join()
    return (max(finished) - started) / 1e9, latencies, outcome, outcome.get("201", 0) + outcome.get("ok", 0)


Plan = list[tuple[str, int, str]]  # one client's reservations: (token, provider id, start ISO)


def reservation_plans(world: World, group: str) -> list[Plan]:
    """THROUGHPUT_EACH distinct slots per client: interleaved on the group's one provider,
    or the same times on each client's own provider. Patients rotate within the client's
    share, so none holds more than 2 (the limit is 3)."""
    providers, patients = world.providers[group], world.patients[group]
    share = len(patients) // THROUGHPUT_CLIENTS
    if len(providers) == 1:
        slots = slot_sequence(2, THROUGHPUT_CLIENTS * THROUGHPUT_EACH)
        at = lambda i, k: (providers[0], slots[k * THROUGHPUT_CLIENTS + i])  # noqa: E731
    else:
        slots = slot_sequence(2, THROUGHPUT_EACH)
        at = lambda i, k: (providers[i], slots[k])  # noqa: E731
    return [
        [
            (world.token(patients[i * share + k % share]), at(i, k)[0], at(i, k)[1].isoformat())
            for k in range(THROUGHPUT_EACH)
        ]
        for i in range(THROUGHPUT_CLIENTS)
    ]


def plan_events(plan: Plan) -> list[dict[str, Any]]:
    return [reserve_event(token, provider, datetime.fromisoformat(start)) for token, provider, start in plan]


def labelled(response: dict[str, Any]) -> str:
    return f"{response['statusCode']} {code_of(response)}".strip()


def reserve_in_threads(world: World, plans: list[Plan]) -> tuple[float, list[int], Counter[str], int]:
    containers = [container("appointments") for _ in plans]  # pool of 1 each, as on Lambda
    try:
        for module, plan in zip(containers, plans, strict=True):  # open each connection before timing
            call(module.handler, http_event("GET", "/appointments", token=plan[0][0]))

        def work(index: int) -> Iterator[Callable[[], str]]:
            handler = containers[index].handler
            for event in plan_events(plans[index]):
                yield lambda event=event: labelled(invoke(handler, event))

        return run_clients(len(plans), work)
    finally:
        for module in containers:
            release_function(module)


def reserve_child(config: dict[str, Any]) -> dict[str, Any]:
    """One container in its own process (the `reserve` mode of `python -m bench.load_bench`):
    load, connect, say "ready", wait for "go" on stdin, reserve, report."""
    ready = sys.stdout
    with quiet():
        module = container("appointments")
        try:
            events = plan_events(config["plan"])
            call(module.handler, http_event("GET", "/appointments", token=config["plan"][0][0]))
            ready.write("ready\n")
            ready.flush()
            sys.stdin.readline()
            latencies: list[int] = []
            outcome: Counter[str] = Counter()
            for event in events:
                started = time.monotonic_ns()
                label = labelled(invoke(module.handler, event))
                latencies.append(time.monotonic_ns() - started)
                outcome[label] += 1
            finished = time.monotonic_ns()
        finally:
            release_function(module)
    return {"latencies": latencies, "outcome": dict(outcome), "finished": finished}


def reserve_in_processes(plans: list[Plan]) -> tuple[float, list[int], Counter[str], int]:
    """One process per client, each a container of its own, as on Lambda (no shared GIL).
    They load and connect first; the clock starts when all are told to go."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.load_bench"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=REPO,
        )
        for _ in plans
    ]  # fmt: skip
    try:
        for process, plan in zip(processes, plans, strict=True):
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(json.dumps({"mode": "reserve", "plan": plan}) + "\n")
            process.stdin.flush()
        for process in processes:
            assert process.stdout is not None
            if (line := process.stdout.readline().strip()) != "ready":
                raise RuntimeError(f"a reserving process did not start: {line!r}")
        started = time.monotonic_ns()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [json.loads(process.communicate(timeout=300)[0].strip().splitlines()[-1]) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    outcome: Counter[str] = Counter()
    for result in results:
        outcome.update(result["outcome"])
    latencies = [x for result in results for x in result["latencies"]]
    seconds = (max(result["finished"] for result in results) - started) / 1e9
    return seconds, latencies, outcome, outcome.get("201", 0)


def reserve_with_driver(world: World) -> tuple[float, list[int], Counter[str], int]:
    """The INSERT a reservation ends with, straight through pg8000 from 8 threads."""
    import pg8000.native

    url = make_url(world.url)
    providers, patients = world.providers["driver"], world.patients["driver"]
    first = NOW + timedelta(days=2)
    insert = (
        "INSERT INTO appointments (provider_id, patient_id, start_time, end_time, status, expires_at, created_at, "
        "updated_at) VALUES (:provider, :patient, :start, :end, 'reserved', :expires, :now, :now) RETURNING id"
    )
    connections = [
        pg8000.native.Connection(
            user=url.username or "postgres", host=url.host or "127.0.0.1", port=url.port or 5432,
            database=url.database, password=url.password,
        )
        for _ in range(THROUGHPUT_CLIENTS)
    ]  # fmt: skip
    try:

        def work(index: int) -> Iterator[Callable[[], str]]:
            connection = connections[index]
            for k in range(DRIVER_EACH):
                start = first + timedelta(minutes=15 * k)
                values = {"provider": providers[index], "patient": patients[index], "start": start,
                          "end": start + timedelta(minutes=15), "expires": NOW + timedelta(minutes=30),
                          "now": NOW}  # fmt: skip

                def task(values: dict[str, Any] = values) -> str:
                    connection.run(insert, **values)  # autocommit: one transaction per INSERT
                    return "ok"

                yield task

        return run_clients(THROUGHPUT_CLIENTS, work)
    finally:
        for connection in connections:
            connection.close()


def run_throughput(world: World) -> list[Throughput]:
    cases = [
        ("handler, 8 threads in one process, one provider", lambda: reserve_in_threads(world, reservation_plans(
            world, "hot"))),
        ("handler, 8 threads in one process, a provider each", lambda: reserve_in_threads(world, reservation_plans(
            world, "own"))),
        ("handler, 8 processes (a container each), one provider", lambda: reserve_in_processes(reservation_plans(
            world, "hot_p"))),
        ("handler, 8 processes (a container each), a provider each", lambda: reserve_in_processes(
            reservation_plans(world, "own_p"))),
        (f"baseline: the same INSERT via pg8000, {THROUGHPUT_CLIENTS} threads", lambda: reserve_with_driver(world)),
    ]  # fmt: skip
    results = []
    for name, measure_case in cases:
        log(f"throughput: {name}")
        seconds, latencies, outcome, done = measure_case()
        results.append(Throughput(name, done, seconds, latencies, outcome))
    return results


def throughput_table(results: list[Throughput]) -> Table:
    baseline = results[-1]
    rows = [
        [r.name, r.done, f"{r.seconds:.2f}", f"{r.per_second:.0f}", ms(percentile(r.latencies_ns, 50)),
         ms(percentile(r.latencies_ns, 99)), ratio(baseline.per_second, r.per_second),
         ", ".join(f"{k}: {v}" for k, v in sorted(r.outcome.items()))]
        for r in results
    ]  # fmt: skip
    return table(
        f"3. Throughput: {THROUGHPUT_CLIENTS} concurrent clients on distinct slots",
        ["case", "done", "seconds", "per second", "p50 ms", "p99 ms", "driver is faster by", "answers"],
        rows,
        f"{THROUGHPUT_CLIENTS} clients start together, each with its own appointments container (pool of 1, as on "
        f"Lambda) calling the real handler back to back, {THROUGHPUT_EACH} reservations each on slots no one else "
        "takes, patients rotating (none nears the 3-hold limit). As threads, the 8 containers share one "
        "process and its GIL; as processes (`python -m bench.load_bench`, loaded and connected before the "
        "start) they do not, like Lambda containers. 'one provider' books one popular provider's calendar "
        "(every reservation bumps version rows of that provider's days); 'a provider each' spreads the clients. "
        "The baseline sends the INSERT a reservation ends with (same columns, same exclusion constraints and "
        f"indexes) straight through pg8000, autocommit, {DRIVER_EACH} per thread. A reservation is one "
        "transaction of ~12 round trips (pg8000's BEGIN, pool pre-ping, token user, provider, 2 availability "
        "reads, patient row lock, hold count, lazy expiry, INSERT, day-version bump, "
        "COMMIT) plus JSON, validation and slot generation in Python; the 2 cores are shared with Postgres.",
    )


# --- 4. scale --------------------------------------------------------------------------


def bulk_appointments(world: World, measured: int) -> tuple[float, float]:
    """SCALE_ROWS appointments over SCALE_PROVIDERS providers (the measured one first) and
    SCALE_PATIENTS patients; returns (insert seconds, settle seconds).

    Provider p's k-th row sits at position (37k + 11p) mod P (P = SCALE_DAYS x 32 quarter
    hours; 37 is prime to P and k < P, so positions differ per provider) and its patient is
    (p + position) mod SCALE_PATIENTS: distinct among the providers sharing a position,
    hence a time. Both exclusion constraints hold whatever the status."""
    positions = SCALE_DAYS * 32
    first = NOW - timedelta(days=SCALE_PAST_DAYS)
    first = first.replace(hour=12, minute=0)  # 12:00-20:00 UTC = 8am-4pm in New York, inside the hours
    started = time.perf_counter()
    bulk_providers = insert_users(world.admin, "provider", "bulk-provider", SCALE_PROVIDERS - 1)
    bulk_patients = insert_users(world.admin, "patient", "bulk-patient", SCALE_PATIENTS)
    with world.admin.begin() as connection:
        for name, ids in (("bench_providers", [measured, *bulk_providers]), ("bench_patients", bulk_patients)):
            connection.execute(text(f"CREATE TEMP TABLE {name} (n int PRIMARY KEY, id bigint) ON COMMIT DROP"))
            numbered = "SELECT o - 1, id FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY AS u(id, o)"
            connection.execute(text(f"INSERT INTO {name} {numbered}"), {"ids": ids})
        # Statuses by row: 20% confirmed and 5% reserved (active, under the constraints),
        # 35% cancelled and 40% expired. Past holds kept 'reserved' are stale ones nobody
        # swept; future ones are live (they expire 20 minutes after NOW).
        connection.execute(
            text(
                f"""
                INSERT INTO appointments
                    (provider_id, patient_id, start_time, end_time, status, expires_at, created_at, updated_at)
                SELECT bp.id, bq.id, s.t, s.t + interval '15 minutes',
                       CASE WHEN mod(g.i, 20) < 4 THEN 'confirmed' WHEN mod(g.i, 20) = 4 THEN 'reserved'
                            WHEN mod(g.i, 20) < 12 THEN 'cancelled' ELSE 'expired' END,
                       CASE WHEN mod(g.i, 20) = 4 THEN
                            CASE WHEN s.t > n.now THEN n.now + interval '20 minutes'
                                 ELSE s.t - interval '3 days' + interval '30 minutes' END END,
                       LEAST(s.t - interval '3 days', n.now), LEAST(s.t - interval '3 days', n.now)
                FROM (SELECT CAST(:now AS timestamptz) AS now) AS n
                CROSS JOIN generate_series(0, {SCALE_ROWS - 1}) AS g(i)
                CROSS JOIN LATERAL (SELECT mod(g.i, {SCALE_PROVIDERS}) AS p, g.i / {SCALE_PROVIDERS} AS k) AS pk
                CROSS JOIN LATERAL (SELECT mod(pk.k * 37 + pk.p * 11, {positions}) AS pos) AS ps
                CROSS JOIN LATERAL (
                    SELECT CAST(:first AS timestamptz) + (ps.pos / 32) * interval '1 day'
                           + mod(ps.pos, 32) * interval '15 minutes' AS t
                ) AS s
                JOIN bench_providers AS bp ON bp.n = pk.p
                JOIN bench_patients AS bq ON bq.n = mod(pk.p + ps.pos, {SCALE_PATIENTS})
                """
            ),
            {"now": NOW, "first": first},
        )
    inserted = time.perf_counter() - started
    started = time.perf_counter()
    with world.admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM (ANALYZE) appointments"))
        connection.execute(text("CHECKPOINT"))
    return inserted, time.perf_counter() - started


@dataclass(frozen=True)
class Listing:
    state: str
    total: int
    own: int
    in_window: int
    slots: int
    timing: Timing


def measure_scale_listing(world: World, handler: Callable[..., dict[str, Any]], state: str) -> Listing:
    (provider_id,) = world.providers["list"]
    event = listing_event(world.token(world.patients["latency"][0]), provider_id, LIST_FIRST, 31)
    response = call(handler, event)
    if response["headers"].get("x-cache") != "miss":
        raise RuntimeError("expected an uncached listing")
    timing = measure(lambda: call(handler, event), runs=LISTING_RUNS, warmup=5)
    window_end = datetime.combine(LIST_FIRST + timedelta(days=31), datetime.min.time(), ZoneInfo(ZONE))
    with world.admin.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM appointments")).scalar_one()
        own = connection.execute(
            text("SELECT count(*) FROM appointments WHERE provider_id = :p"), {"p": provider_id}
        ).scalar_one()
        in_window = connection.execute(
            text(
                "SELECT count(*) FROM appointments WHERE provider_id = :p AND start_time >= :a AND start_time < :b "
                "AND status IN ('reserved', 'confirmed')"
            ),
            {"p": provider_id, "a": datetime.combine(LIST_FIRST, datetime.min.time(), ZoneInfo(ZONE)), "b": window_end},
        ).scalar_one()
    return Listing(state, int(total), int(own), int(in_window), len(body_of(response)), timing)


def scale_table(listings: list[Listing], insert_seconds: float, settle_seconds: float) -> Table:
    empty = listings[0]
    rows = [
        [x.state, count(x.total), count(x.own), x.in_window, x.slots, ms(x.timing.p50_ns), ms(x.timing.p99_ns),
         ratio(x.timing.p50_ns, empty.timing.p50_ns), ratio(x.timing.p99_ns, empty.timing.p99_ns)]
        for x in listings
    ]  # fmt: skip
    factor = listings[-1].timing.p50_ns / empty.timing.p50_ns
    rows.append([f"goal: {SCALE_ROWS:,} rows within {SCALE_GOAL:g}x of empty (p50)", "", "", "", "", "", "",
                 f"{factor:.2f}x", "met" if factor <= SCALE_GOAL else "NOT MET"])  # fmt: skip
    return table(
        f"4. Scale: GET time-slots for 31 days ({LIST_FIRST}..{LIST_FIRST + timedelta(days=30)}), uncached",
        [
            "appointments in table",
            "total rows",
            "this provider's rows",
            "its active rows in the window",
            "slots returned",
            "p50 ms",
            "p99 ms",
            "p50 vs empty",
            "p99 vs empty",
        ],
        rows,
        f"{LISTING_RUNS} timed calls after 5 warm-ups through a providers container with REDIS_URL empty (every "
        "call reads the rules and the appointments from Postgres; X-Cache: miss checked). 'empty' is measured "
        f"before anything is booked. The {SCALE_ROWS:,} rows were inserted in one INSERT ... SELECT "
        f"generate_series ({insert_seconds:.0f} s, under both exclusion constraints and all indexes), then "
        f"VACUUM (ANALYZE) and CHECKPOINT ({settle_seconds:.0f} s): {SCALE_PROVIDERS:,} providers (the measured "
        f"one included) x {SCALE_ROWS // SCALE_PROVIDERS:,} rows over {SCALE_DAYS} days ({SCALE_PAST_DAYS} "
        f"before NOW, the rest ahead), {SCALE_PATIENTS:,} patients; 20% confirmed, 5% reserved, 35% cancelled, "
        "40% expired, no two active rows overlapping per provider or per patient. The other rows also hold "
        "the appointments booked by sections 1-3. The listing also returns fewer slots with the big table: "
        "the measured provider has active appointments inside the window.",
    )


# --- 5. HTTP load through the local gateway ---------------------------------------------

HELLO_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    MemorySize: 512
Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: hello/
      Handler: handler.handler
      Events:
        Hello:
          Type: HttpApi
          Properties: {Path: /hello, Method: GET}
"""
HELLO_HANDLER = """\
from fastapi import FastAPI

from reservations.http.lambda_entry import make_lambda_handler

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "world"}


handler = make_lambda_handler(app)
"""


def http_clients(config: dict[str, Any]) -> dict[str, Any]:
    """Drive the gateway from a separate process (`python -m bench.load_bench`, the
    config on stdin, the result as JSON on stdout), so the clients do not share the
    server's GIL. The process stops at its deadline."""
    process = subprocess.run(
        [sys.executable, "-m", "bench.load_bench"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=float(config["seconds"]) + 120,
        check=False,
    )
    if process.returncode != 0:
        raise RuntimeError(f"the load client failed ({process.returncode}): {process.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(process.stdout)
    return result


class Recorder:
    """The load client's HTTP calls: latency, status and error code per request type,
    and the first 5xx bodies."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.stats: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []

    async def __call__(self, op: str, method: str, path: str, token: str | None, **kwargs: Any) -> tuple[int, Any]:
        import httpx

        entry = self.stats.setdefault(
            op, {"latencies": [], "statuses": Counter(), "codes": Counter(), "cache": Counter()}
        )
        headers = {"authorization": f"Bearer {token}"} if token else {}
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path, headers=headers, **kwargs)
            status, content = response.status_code, response.content
            if cache := response.headers.get("x-cache"):
                entry["cache"][cache] += 1
        except httpx.HTTPError as error:
            status, content = 599, f"client error {type(error).__name__}: {error}".encode()
        entry["latencies"].append(time.perf_counter() - started)
        entry["statuses"][status] += 1
        try:
            body = json.loads(content)
        except ValueError:
            body = content.decode(errors="replace")
        if 400 <= status < 500 and isinstance(body, dict):
            entry["codes"][f"{status} {body.get('code', '')}"] += 1
        if status >= 500 and len(self.errors) < 10:
            self.errors.append(f"{method} {path} -> {status}: {content[:300].decode(errors='replace')}")
        return status, body

    def result(self, elapsed: float) -> dict[str, Any]:
        ops = {
            op: {**entry, **{key: dict(entry[key]) for key in ("statuses", "codes", "cache")}}
            for op, entry in self.stats.items()
        }
        return {"elapsed": elapsed, "ops": ops, "errors": self.errors}


async def hello_client(request: Recorder, config: dict[str, Any], _: int, deadline: float) -> None:
    while time.perf_counter() < deadline:
        await request("GET /hello", "GET", "/hello", None)


async def booking_client(request: Recorder, config: dict[str, Any], index: int, deadline: float) -> None:
    """One patient: list a random provider's week, reserve a listed slot, then confirm
    (60%, a third of those cancelled later) or cancel (40%); no new request after the deadline."""
    rng = random.Random(config["seed"] + index)
    token = config["tokens"][index]
    while time.perf_counter() < deadline:
        provider = rng.choice(config["providers"])
        first = date.fromisoformat(config["first_day"]) + timedelta(days=rng.randrange(config["day_span"]))
        params = {"start_date": first.isoformat(), "end_date": (first + timedelta(days=6)).isoformat()}
        status, slots = await request("list", "GET", f"/providers/{provider}/time-slots", token, params=params)
        if status != 200 or not slots or time.perf_counter() >= deadline:
            continue
        body = {"provider_id": provider, "start_time": rng.choice(slots)["start_time"]}
        status, reserved = await request("reserve", "POST", "/appointments/reserve", token, json=body)
        if status != 201 or time.perf_counter() >= deadline:
            continue
        slot = {"slot_id": reserved["slot_id"]}
        if rng.random() < 0.6:
            status, _ = await request("confirm", "POST", "/appointments/confirm", token, json=slot)
            if status != 200 or rng.random() >= 1 / 3 or time.perf_counter() >= deadline:
                continue
        await request("cancel", "POST", "/appointments/cancel", token, json=slot)


async def _drive(config: dict[str, Any]) -> dict[str, Any]:
    import httpx

    deadline = time.perf_counter() + float(config["seconds"])
    limits = httpx.Limits(max_connections=config["clients"], max_keepalive_connections=config["clients"])
    worker = hello_client if config["mode"] == "hello" else booking_client
    async with httpx.AsyncClient(base_url=config["base_url"], limits=limits, timeout=30.0) as client:
        request = Recorder(client)
        started = time.perf_counter()
        await asyncio.gather(*(worker(request, config, i, deadline) for i in range(config["clients"])))
        return request.result(time.perf_counter() - started)


@contextmanager
def serving(template: Path) -> Iterator[tuple[str, list[ModuleType]]]:
    """The gateway over template.yaml on 127.0.0.1 (free port), its functions loaded
    before traffic (no cold start inside the timed run) with their clocks pinned."""
    from reservations_dev import harness, server

    from reservations.config import settings_from_environment

    settings_from_environment.cache_clear()  # the functions read the current environment
    harness.clear_handler_cache()
    app = server.create_app(template)
    modules: list[ModuleType] = []
    seen: set[str] = set()
    for route in app.state.routes:
        if route.function_name in seen:
            continue
        seen.add(route.function_name)
        module = harness.load_module(route)  # the warm container the gateway serves
        if hasattr(getattr(getattr(module, "app", None), "state", None), "runtime"):
            modules.append(pin_clock(module))
    try:
        with server.run_in_thread(app, "127.0.0.1", 0) as base_url:
            yield base_url, modules
    finally:
        for module in modules:
            release_function(module)
        harness.clear_handler_cache()


@dataclass(frozen=True)
class LoadRun:
    name: str
    result: dict[str, Any]
    cache_failures: int = 0

    def all_latencies(self) -> list[float]:
        return [x for op in self.result["ops"].values() for x in op["latencies"]]

    def statuses(self) -> Counter[int]:
        total: Counter[int] = Counter()
        for op in self.result["ops"].values():
            total.update({int(k): v for k, v in op["statuses"].items()})
        return total


def run_gateway(world: World) -> list[LoadRun]:
    seconds = load_seconds()
    runs = []
    environment = {"DB_POOL_SIZE": GATEWAY_POOL, "POWERTOOLS_METRICS_DISABLED": "true"}  # as `make dev`
    with patched_environ(**environment), tempfile.TemporaryDirectory(prefix="bench-hello-") as folder:
        template = Path(folder) / "template.yaml"
        template.write_text(HELLO_TEMPLATE)
        (Path(folder) / "hello").mkdir()
        (Path(folder) / "hello" / "handler.py").write_text(textwrap.dedent(HELLO_HANDLER))
        baseline_seconds = min(LOAD_BASELINE_SECONDS, seconds)
        log(f"gateway: hello-world function, {LOAD_CLIENTS} clients, {baseline_seconds:g} s")
        with serving(template) as (base_url, _):
            config = {"base_url": base_url, "seconds": baseline_seconds, "clients": LOAD_CLIENTS, "mode": "hello"}
            runs.append(LoadRun("baseline: gateway + hello-world function", http_clients(config)))
        log(f"gateway: template.yaml, {LOAD_CLIENTS} clients, {seconds:g} s")
        with serving(REPO / "template.yaml") as (base_url, modules):
            config = {
                "base_url": base_url,
                "seconds": seconds,
                "clients": LOAD_CLIENTS,
                "mode": "booking",
                "tokens": [world.token(p) for p in world.patients["gateway"]],
                "providers": world.providers["gateway"],
                "first_day": LIST_FIRST.isoformat(),
                "day_span": 75,
                "seed": 6,
            }
            result = http_clients(config)
            failures = sum(getattr(m.app.state.runtime.__dict__.get("day_store"), "failures", 0) for m in modules)
            runs.append(LoadRun("template.yaml: list / reserve / confirm / cancel", result, failures))
    for run in runs:
        for line in run.result["errors"][:5]:
            log(f"5xx in {run.name}: {line}")
    return runs


def by_class(statuses: Counter[int]) -> tuple[int, int, int]:
    """(2xx and 3xx, 4xx, 5xx) answer counts; the client's own failures count as 5xx (599)."""
    ok = sum(n for status, n in statuses.items() if status < 400)
    client_errors = sum(n for status, n in statuses.items() if 400 <= status < 500)
    return ok, client_errors, sum(n for status, n in statuses.items() if status >= 500)


def gateway_tables(runs: list[LoadRun]) -> list[Table]:
    baseline, load = runs
    rows = []
    for run in runs:
        latencies = run.all_latencies()
        ok, client_errors, fives = by_class(run.statuses())
        elapsed = run.result["elapsed"]
        rows.append([
            run.name, count(len(latencies)), f"{elapsed:.1f}", f"{len(latencies) / elapsed:.0f}",
            f"{percentile(latencies, 50) * 1e3:.1f}", f"{percentile(latencies, 99) * 1e3:.1f}", ok, client_errors,
            fives, "ok" if fives == 0 else "FAIL",
        ])  # fmt: skip
    ops = []
    for op in ("list", "reserve", "confirm", "cancel"):
        entry = load.result["ops"].get(op)
        if not entry:
            continue
        ok, _, fives = by_class(Counter({int(k): v for k, v in entry["statuses"].items()}))
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(entry["codes"].items())) or "-"
        latencies = entry["latencies"]
        cache = ", ".join(f"{k}: {v}" for k, v in sorted(entry.get("cache", {}).items())) or "-"
        ops.append([op, count(len(latencies)), f"{percentile(latencies, 50) * 1e3:.1f}",
                    f"{percentile(latencies, 99) * 1e3:.1f}", ok, codes, fives, cache])  # fmt: skip
    errors = load.result["errors"] + baseline.result["errors"]
    shown = "; ".join(f"`{e[:200]}`" for e in errors[:3])
    notes = (
        f"`create_app(template.yaml)` served by `run_in_thread` on 127.0.0.1 (uvicorn, h11), DB_POOL_SIZE="
        f"{GATEWAY_POOL} and metrics off as in `make dev`, functions loaded and clocks pinned before the run. "
        f"{LOAD_CLIENTS} asyncio clients (httpx, keep-alive) run in a separate process on the same 2 cores, each "
        "as its own patient: list 7 days of a random provider among "
        f"{LOAD_PROVIDERS} (random week in the next 11 weeks), reserve a random listed slot, then confirm (60%, "
        "a third of those cancelled afterwards) or cancel (40%). Each client stops at the deadline; requests/s "
        "counts every answered request over the run. 409s are expected (another client took the slot between "
        "listing and reserving, or the patient already has an appointment at that time). The baseline is the "
        "same gateway and client driving a hello-world FastAPI + Mangum + Powertools function. "
        f"Redis failures seen by the slot cache: {load.cache_failures}."
    )
    if errors:
        notes += f" First 5xx bodies: {shown}"
    return [
        table(
            f"5. HTTP load through the local gateway, {LOAD_CLIENTS} clients",
            ["run", "requests", "seconds", "requests/s", "p50 ms", "p99 ms", "2xx", "4xx", "5xx", "check"],
            rows,
            notes,
        ),
        table(
            "5b. The load run by request type",
            ["request", "count", "p50 ms", "p99 ms", "2xx", "4xx by code", "5xx", "X-Cache"],
            ops,
            "Latency measured by the client: HTTP on loopback, the gateway's event translation and worker-thread "
            "hop, the handler, and the wait for a pool connection when more requests than connections are in "
            "flight. X-Cache counts the listings' cache header: every reserve, confirm and cancel bumps the "
            "versions of the days around its slot (UTC date +-1), which turns those cached days into misses; "
            "the provider's other days stay hits, hence the many partial listings.",
        ),
    ]


# --- run -------------------------------------------------------------------------------


def run() -> list[Table]:
    log("creating a throwaway database")
    environment = bench_environment("", redis=redis_url())
    started = time.perf_counter()
    with throwaway_database("reservations_load") as url:
        environment["DATABASE_URL"] = url
        with patched_environ(**environment), quiet():
            world = build_world(url)
            try:
                log("scale: 31-day listing on the empty table")
                uncached = container("providers", REDIS_URL="")
                try:
                    listings = [measure_scale_listing(world, uncached.handler, "empty")]
                finally:
                    release_function(uncached)
                cases = latency_cases(world)
                tables = [latency_table(cases)]
                reserve = next(c.timing for c in cases if c.name == RESERVE_CASE)
                tables.append(contention_table(run_contention(world), reserve))
                tables.append(throughput_table(run_throughput(world)))
                log(f"scale: inserting {SCALE_ROWS:,} appointments")
                insert_seconds, settle_seconds = bulk_appointments(world, world.providers["list"][0])
                log(f"scale: inserted in {insert_seconds:.1f} s, settled in {settle_seconds:.1f} s")
                uncached = container("providers", REDIS_URL="")
                try:
                    listings.append(measure_scale_listing(world, uncached.handler, f"{SCALE_ROWS:,}"))
                finally:
                    release_function(uncached)
                tables.append(scale_table(listings, insert_seconds, settle_seconds))
                tables.extend(gateway_tables(run_gateway(world)))
            finally:
                cleanup_redis(world)
                world.runtime.engine.dispose()
                world.admin.dispose()
    log(f"done in {time.perf_counter() - started:.0f} s")
    return tables


if __name__ == "__main__":  # a helper process: section 3's reserving container or section 5's HTTP clients
    child_config = json.loads(sys.stdin.readline())
    if child_config["mode"] == "reserve":
        print(json.dumps(reserve_child(child_config)), flush=True)
    else:
        print(json.dumps(asyncio.run(_drive(child_config))), flush=True)
