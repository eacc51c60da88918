"""Issue 3's speed section: slot generation, storing availability, uncached time-slots.

1. `generate_slots` for one year (2027) of M-F 8am-4pm in America/New_York with 50
   exceptions, against a loop building the same slots as naive wall-clock datetimes
   (same rules, no zone) and against a plain list of as many datetime pairs.
2. POST /providers/{id}/availability through the real providers Lambda handler: one
   week vs one year (52x the slots) -> rows stored and time, against bare handler
   round trips (a hello-world FastAPI+Mangum app and GET /me of the auth function).
3. GET /providers/{id}/time-slots for 31 days with the cache off (REDIS_URL empty, so
   every call computes from Postgres) with 0 and 100,000 appointments in the table,
   plus the appointments query's EXPLAIN (ANALYZE, BUFFERS).

Everything runs in a throwaway database that is dropped at the end.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from reservations.domain.availability import (
    Availability,
    WeeklyPeriod,
    WeeklyWindow,
    Window,
    generate_slots,
    parse_days,
    parse_window,
)
from reservations.domain.scheduling import ProviderSchedule

from .common import (
    Table,
    Timing,
    bench_environment,
    call,
    count,
    hello_handlers,
    http_event,
    insert_users,
    issue_token,
    load_function,
    measure,
    ms,
    patched_environ,
    pin_clock,
    quiet,
    ratio,
    release_function,
    spread_appointments,
    table,
    throwaway_database,
)

ZONE = "America/New_York"
YEAR_FIRST, YEAR_LAST = date(2027, 1, 1), date(2027, 12, 31)
EXCEPTIONS = 50
SLOT = timedelta(minutes=15)

# The handlers' clock is pinned, so the listed window is inside the booking horizon and
# most of the 100k appointments are history, as in a table that has been in use a year.
NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
POST_FIRST = date(2027, 6, 2)
LIST_FIRST, LIST_LAST = date(2027, 6, 3), date(2027, 7, 3)  # 31 days

APPOINTMENTS = 100_000
PROVIDERS = 200  # the measured provider included
PATIENTS = 2_000
# Bulk appointments fall on 396 days x 32 quarter hours (12:00-20:00 UTC) from this start.
BULK_FIRST = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
BULK_POSITIONS = 396 * 32
HISTORY_ROWS = 20_000  # extra past appointments of the measured provider (last state)

GENERATION_RUNS, POST_RUNS, HANDLER_RUNS, LISTING_RUNS = 100, 50, 100, 200


def log(message: str) -> None:
    print(f"[scheduling] {message}", file=sys.stderr, flush=True)


# --- availability fixtures -------------------------------------------------------------


def exception_days(first: date, last: date, n: int = EXCEPTIONS) -> dict[date, tuple[Window, ...]]:
    """n exceptions on weekdays spread over first..last: even ones a day off, odd ones
    replaced hours (9am-12pm and 1pm-5pm, 7 h instead of 8)."""
    weekdays = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    weekdays = [day for day in weekdays if day.weekday() < 5]
    chosen = weekdays[2::5][:n]
    if len(chosen) < n:
        raise ValueError(f"{first}..{last} has room for only {len(chosen)} exceptions")
    replaced = (parse_window("9am", "12pm"), parse_window("1pm", "5pm"))
    return {day: () if i % 2 == 0 else replaced for i, day in enumerate(chosen)}


def weekday_availability(first: date, last: date, *, exceptions: int = EXCEPTIONS) -> Availability:
    weekly = (WeeklyWindow(parse_days("M-F"), parse_window("8am", "4pm")),)
    dated = exception_days(first, last, exceptions) if exceptions else {}
    return Availability((WeeklyPeriod(first, last, weekly),), dated, {})


def availability_body(first: date, days: int, *, exceptions: int = 0) -> dict[str, Any]:
    """The HTTP body (AvailabilityIn) of a M-F 8am-4pm schedule over `days` days."""
    last = first + timedelta(days=days - 1)
    body: dict[str, Any] = {
        "general_schedule": {
            "start_date": first.isoformat(),
            "end_date": last.isoformat(),
            "times": [{"days": "M-F", "start": "8am", "end": "4pm"}],
        }
    }
    if exceptions:
        body["exceptions"] = [
            {
                "date": day.isoformat(),
                "times": [{"start": f"{w.start:%H:%M}", "end": f"{w.end:%H:%M}"} for w in windows if w.end],
            }
            for day, windows in exception_days(first, last, exceptions).items()
        ]
    return body


# --- 1. slot generation ----------------------------------------------------------------


def _offsets(windows: tuple[Window, ...]) -> tuple[tuple[timedelta, timedelta], ...]:
    minutes: set[int] = set()
    for window in windows:
        start = window.start.hour * 60 + window.start.minute + (1 if window.start.second else 0)
        end = 24 * 60 if window.end is None else window.end.hour * 60 + window.end.minute
        minutes.update(range(-(-start // 15) * 15, end - 14, 15))
    return tuple((timedelta(minutes=m), timedelta(minutes=m + 15)) for m in sorted(minutes))


def naive_wall_clock_slots(availability: Availability, first: date, last: date) -> list[tuple[datetime, datetime]]:
    """The same rules applied day by day, building naive local datetimes: no zone, no
    UTC conversion, no DST handling. Assumes one weekly period covering the range."""
    (period,) = availability.periods
    memo: dict[tuple[Window, ...], tuple[tuple[timedelta, timedelta], ...]] = {}

    def offsets_of(windows: tuple[Window, ...]) -> tuple[tuple[timedelta, timedelta], ...]:
        if windows not in memo:
            memo[windows] = _offsets(windows)
        return memo[windows]

    weekly = [offsets_of(tuple(w.window for w in period.windows if wd in w.weekdays)) for wd in range(7)]
    exceptions = availability.exceptions
    slots: list[tuple[datetime, datetime]] = []
    day = first
    while day <= last:
        offsets = offsets_of(exceptions[day]) if day in exceptions else weekly[day.weekday()]
        if offsets:
            midnight = datetime(day.year, day.month, day.day)
            slots.extend((midnight + start, midnight + end) for start, end in offsets)
        day += timedelta(days=1)
    return slots


def plain_pairs(n: int) -> list[tuple[datetime, datetime]]:
    """n consecutive (start, end) UTC pairs: the floor of materialising n slots."""
    slots = []
    start = datetime(2027, 1, 1, tzinfo=UTC)
    for _ in range(n):
        end = start + SLOT
        slots.append((start, end))
        start = end
    return slots


def generation_table() -> Table:
    log("slot generation")
    zone = ZoneInfo(ZONE)
    availability = weekday_availability(YEAR_FIRST, YEAR_LAST)
    year = generate_slots(availability, zone, YEAR_FIRST, YEAR_LAST)
    naive = naive_wall_clock_slots(availability, YEAR_FIRST, YEAR_LAST)
    if len(naive) != len(year):
        raise RuntimeError(f"baseline made {len(naive)} slots, generate_slots {len(year)}")
    month = generate_slots(availability, zone, LIST_FIRST, LIST_LAST)
    cases: list[tuple[str, int, Timing]] = [
        (
            "generate_slots, 2027, America/New_York",
            len(year),
            measure(lambda: generate_slots(availability, zone, YEAR_FIRST, YEAR_LAST), runs=GENERATION_RUNS),
        ),
        (
            "baseline: same rules, naive wall-clock datetimes, no zone",
            len(naive),
            measure(lambda: naive_wall_clock_slots(availability, YEAR_FIRST, YEAR_LAST), runs=GENERATION_RUNS),
        ),
        (
            "baseline: plain list of as many UTC (start, end) pairs",
            len(year),
            measure(lambda: plain_pairs(len(year)), runs=GENERATION_RUNS),
        ),
        (
            f"generate_slots, 31 days ({LIST_FIRST}..{LIST_LAST}, crosses no DST change)",
            len(month),
            measure(lambda: generate_slots(availability, zone, LIST_FIRST, LIST_LAST), runs=GENERATION_RUNS),
        ),
    ]
    reference = cases[0][2].p50_ns
    rows = [
        [name, count(slots), ms(t.p50_ns, 3), ms(t.p99_ns, 3), f"{t.p50_ns / slots:.0f}", ratio(t.p50_ns, reference)]
        for name, slots, t in cases
    ]
    days_off = sum(1 for windows in availability.exceptions.values() if not windows)
    return table(
        "1. Slot generation: one year of M-F 8am-4pm with 50 exceptions",
        ["case", "slots", "median ms", "p99 ms", "ns/slot (median)", "vs generate_slots"],
        rows,
        f"{GENERATION_RUNS} timed runs after 3 warm-ups, GC on. Exceptions: {days_off} days off and "
        f"{EXCEPTIONS - days_off} days with replaced hours (9am-12pm + 1pm-5pm). The naive baseline applies "
        "the same rules (offsets memoised per distinct window set) but builds naive local datetimes, so the "
        "difference to generate_slots is its zone handling (two offset lookups per day, per-slot conversion "
        "on the 2 DST days), its grid bookkeeping and its final ordering check. The plain list is the floor: "
        "allocating as many (start, end) pairs, no rules at all.",
    )


# --- fixtures in the database ----------------------------------------------------------


def bulk_appointments(engine: Engine, measured: int) -> float:
    """100,000 appointments over 200 providers (the measured one first) and 2,000 patients;
    no two active rows share a (provider, time) or a (patient, time). Returns seconds."""
    started = time.perf_counter()
    with engine.begin() as connection:
        extra = PROVIDERS - connection.execute(text("SELECT count(*) FROM users WHERE role = 'provider'")).scalar_one()
        insert_users(engine, "provider", [f"bulk-provider-{i}" for i in range(extra)], ZONE)
        insert_users(engine, "patient", [f"bulk-patient-{i}" for i in range(PATIENTS)])
        connection.execute(
            text(
                "CREATE TEMP TABLE bench_providers ON COMMIT DROP AS "
                "SELECT row_number() OVER (ORDER BY id <> :measured, id) - 1 AS n, id "
                "FROM users WHERE role = 'provider'"
            ),
            {"measured": measured},
        )
        connection.execute(
            text(
                "CREATE TEMP TABLE bench_patients ON COMMIT DROP AS "
                "SELECT row_number() OVER (ORDER BY id) - 1 AS n, id FROM users "
                "WHERE role = 'patient' AND name LIKE :bulk_patients"
            ),
            {"bulk_patients": "bulk-patient-%"},
        )
        spread_appointments(
            connection, rows=APPOINTMENTS, providers=PROVIDERS, patients=PATIENTS, positions=BULK_POSITIONS,
            first=BULK_FIRST, now=NOW,
            status="CASE WHEN mod(g.i, 10) < 7 THEN 'confirmed' WHEN mod(g.i, 10) = 7 THEN 'cancelled' "
                   "WHEN mod(g.i, 10) = 8 THEN 'expired' ELSE 'reserved' END",
            expires="CASE WHEN mod(g.i, 10) = 9 THEN s.t - interval '1 day' END",
            created="s.t - interval '3 days'",
        )  # fmt: skip
    settle(engine)
    return time.perf_counter() - started


def provider_history(engine: Engine, measured: int) -> float:
    """HISTORY_ROWS confirmed past appointments of the measured provider, before the
    bulk range (from 2024-08-01, 32 a day), spread over the bulk patients."""
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(
            text(
                f"""
                INSERT INTO appointments
                    (provider_id, patient_id, start_time, end_time, status, created_at, updated_at)
                SELECT :measured, q.id, s.t, s.t + interval '15 minutes', 'confirmed', s.t, s.t
                FROM generate_series(0, {HISTORY_ROWS - 1}) AS g(i)
                CROSS JOIN LATERAL (
                    SELECT timestamptz '2024-08-01 12:00+00' + (g.i / 32) * interval '1 day'
                           + mod(g.i, 32) * interval '15 minutes' AS t
                ) AS s
                JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS n, id FROM users
                      WHERE role = 'patient' AND name LIKE :bulk_patients) AS q ON q.n = mod(g.i, {PATIENTS})
                """
            ),
            {"measured": measured, "bulk_patients": "bulk-patient-%"},
        )
    settle(engine)
    return time.perf_counter() - started


def settle(engine: Engine) -> None:
    """What a table in steady state has had: statistics, a vacuum (so autovacuum does not
    start during the timed calls) and a checkpoint (so the bulk load's dirty pages are not
    written out during them)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM (ANALYZE) appointments"))
        connection.execute(text("CHECKPOINT"))


def availability_rows(engine: Engine, provider_id: int) -> tuple[int, int]:
    with engine.connect() as connection:
        periods = connection.execute(
            text("SELECT count(*) FROM availability_periods WHERE provider_id = :p"), {"p": provider_id}
        ).scalar_one()
        days = connection.execute(
            text("SELECT count(*) FROM availability_days WHERE provider_id = :p"), {"p": provider_id}
        ).scalar_one()
    return int(periods), int(days)


def appointment_counts(engine: Engine, provider_id: int) -> tuple[int, int]:
    with engine.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM appointments")).scalar_one()
        own = connection.execute(
            text("SELECT count(*) FROM appointments WHERE provider_id = :p"), {"p": provider_id}
        ).scalar_one()
    return int(total), int(own)


# --- handlers and SQL ------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: Any
    many: bool

    @property
    def round_trips(self) -> int:
        # pg8000's executemany sends one statement per parameter set.
        return len(self.parameters) if self.many else 1


@contextmanager
def captured_sql(engine: Engine) -> Iterator[list[Statement]]:
    statements: list[Statement] = []

    def capture(_conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, many: bool) -> None:
        statements.append(Statement(sql, parameters, many))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def explain(engine: Engine, statement: Statement) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of a captured statement with its own parameters."""
    with engine.connect() as connection:
        raw = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement.sql, tuple(statement.parameters or ())
        ).scalar_one()
        connection.rollback()
    root = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(root["Plan"])
    heap = next((n for n in nodes if n["Node Type"] in ("Index Scan", "Bitmap Heap Scan", "Seq Scan")), root["Plan"])
    index = next((n for n in nodes if n.get("Index Name")), {})
    returned = int(heap.get("Actual Rows", 0)) * int(heap.get("Actual Loops", 1))
    removed = int(heap.get("Rows Removed by Filter", 0)) + int(heap.get("Rows Removed by Index Recheck", 0))
    return {
        "scan": heap["Node Type"] + (f" ({index['Index Name']})" if index else ""),
        "index_cond": index.get("Index Cond", ""),
        "visited": returned + removed,
        "returned": returned,
        "removed": removed,
        "hit": int(root["Plan"].get("Shared Hit Blocks", 0)),
        "read": int(root["Plan"].get("Shared Read Blocks", 0)),
        "execution_ms": float(root.get("Execution Time", 0.0)),
    }


# --- 2 and 3 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    name: str
    days: int
    slots: int
    body_bytes: int
    periods: int
    dated: int
    round_trips: int
    timing: Timing


@dataclass(frozen=True)
class Listing:
    state: str
    total: int
    own: int
    slots: int
    statements: int
    handler: Timing
    service: Timing
    plan: dict[str, Any]


class Fixture:
    """The throwaway database's users and two loaded functions (fresh containers)."""

    def __init__(self, database_url: str) -> None:
        self.admin = create_engine(database_url)
        self.measured, self.week_provider, self.year_provider = insert_users(
            self.admin, "provider", ["measured-provider", "week-provider", "year-provider"], ZONE
        )
        (self.patient,) = insert_users(self.admin, "patient", ["listing-patient"])
        self.providers_fn = load_function("providers")
        self.auth_fn = load_function("auth")
        for module in (self.providers_fn, self.auth_fn):
            pin_clock(module, NOW)
            if module.container.settings.cache_enabled:
                raise RuntimeError("REDIS_URL must be empty for this suite (uncached time-slots)")
        self.patient_token = issue_token(self.auth_fn.container, self.patient, "patient", NOW)

    def close(self) -> None:
        release_function(self.providers_fn)
        release_function(self.auth_fn)
        self.admin.dispose()


def measure_baselines(fixture: Fixture) -> tuple[Timing, Timing]:
    log("baselines: hello-world handler, GET /me")
    _, hello = hello_handlers()  # behind the functions' Mangum + Powertools wrapper
    hello_event = http_event("GET", "/hello")
    me_event = http_event("GET", "/me", token=fixture.patient_token)
    auth = fixture.auth_fn.handler
    hello_t = measure(lambda: call(hello, hello_event), runs=HANDLER_RUNS, warmup=5)
    me_t = measure(lambda: call(auth, me_event), runs=HANDLER_RUNS, warmup=5)
    return hello_t, me_t


def measure_posts(fixture: Fixture) -> list[Post]:
    variants = [
        ("1 week", fixture.week_provider, 7, 0),
        ("1 year", fixture.year_provider, 365, 0),
        (f"1 year + {EXCEPTIONS} exceptions", fixture.measured, 365, EXCEPTIONS),
    ]
    handler = fixture.providers_fn.handler
    posts = []
    for name, provider_id, days, exceptions in variants:
        log(f"POST availability: {name}")
        token = issue_token(fixture.providers_fn.container, provider_id, "provider", NOW)
        body = availability_body(POST_FIRST, days, exceptions=exceptions)
        post_event = http_event("POST", f"/providers/{provider_id}/availability", json_body=body, token=token)
        with captured_sql(fixture.providers_fn.container.engine) as statements:
            response = call(handler, post_event)
        timing = measure(lambda post_event=post_event: call(handler, post_event), runs=POST_RUNS)
        periods, dated = availability_rows(fixture.admin, provider_id)
        posts.append(
            Post(
                name=name,
                days=days,
                slots=int(json.loads(response["body"])["slots"]),
                body_bytes=len(post_event["body"]),
                periods=periods,
                dated=dated,
                round_trips=sum(s.round_trips for s in statements),
                timing=timing,
            )
        )
    return posts


def measure_listing(fixture: Fixture, state: str) -> Listing:
    log(f"time-slots, {state}")
    handler = fixture.providers_fn.handler
    container = fixture.providers_fn.container
    list_event = http_event(
        "GET",
        f"/providers/{fixture.measured}/time-slots",
        token=fixture.patient_token,
        query={"start_date": LIST_FIRST.isoformat(), "end_date": LIST_LAST.isoformat()},
    )
    response = call(handler, list_event)
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    if headers.get("x-cache") != "miss":
        raise RuntimeError(f"expected an uncached listing, got X-Cache: {headers.get('x-cache')}")
    with captured_sql(container.engine) as statements:
        call(handler, list_event)
    query = next((s for s in statements if "FROM appointments" in s.sql), None)

    def service() -> None:
        # The domain service on its own, built from the container's policy and store.
        with container.unit_of_work() as session:
            schedule = ProviderSchedule(session, policy=container.booking_policy, now=NOW, store=container.day_store)
            schedule.free_slots(fixture.measured, LIST_FIRST, LIST_LAST)

    handler_t = measure(lambda: call(handler, list_event), runs=LISTING_RUNS, warmup=5)
    service_t = measure(service, runs=LISTING_RUNS, warmup=5)
    total, own = appointment_counts(fixture.admin, fixture.measured)
    return Listing(
        state=state,
        total=total,
        own=own,
        slots=len(json.loads(response["body"])),
        statements=len(statements),
        handler=handler_t,
        service=service_t,
        plan=explain(fixture.admin, query) if query else {},
    )


def storing_table(posts: list[Post], hello_t: Timing, me_t: Timing) -> Table:
    week = posts[0].timing
    rows = [
        [f"POST availability, {p.name}", p.days, count(p.slots), count(p.body_bytes), f"{p.periods} / {p.dated}",
         p.round_trips, ms(p.timing.p50_ns), ms(p.timing.p99_ns), ratio(p.timing.p50_ns, week.p50_ns),
         ratio(p.timing.p50_ns, me_t.p50_ns)]
        for p in posts
    ]  # fmt: skip
    rows += [
        ["baseline: GET /me (auth function, 1 indexed read)", "", "", "", "", "", ms(me_t.p50_ns), ms(me_t.p99_ns),
         "", "1.00x"],
        ["baseline: hello-world FastAPI+Mangum+Powertools, no DB", "", "", "", "", "", ms(hello_t.p50_ns),
         ms(hello_t.p99_ns), "", ratio(hello_t.p50_ns, me_t.p50_ns)],
    ]  # fmt: skip
    growth = posts[1].slots / max(posts[0].slots, 1)
    return table(
        "2. Storing availability through the providers handler (API Gateway v2 event)",
        ["request", "days", "slots offered", "body bytes", "rows stored (periods / days)", "SQL round trips",
         "p50 ms", "p99 ms", "vs 1 week", "vs GET /me"],
        rows,
        f"{POST_RUNS} timed POSTs per row after 3 warm-ups ({HANDLER_RUNS} for baselines). Each POST replaces "
        "the same dates, so each writes the rows shown (delete + insert of the provider's rules). 1 year "
        f"offers {growth:.0f}x the slots of 1 week and stores the same single period row: rules, not rows "
        "per slot. Each exception adds one availability_days row, and one round trip: pg8000's executemany "
        "sends one INSERT per row. Time still grows with the day count because post_availability calls "
        "generate_slots once per touched day (CPU, not rows). Handler clocks pinned to "
        f"{NOW.isoformat()}; dates from {POST_FIRST}.",
    )  # fmt: skip


def listing_table(listings: list[Listing], me_t: Timing) -> Table:
    empty = listings[0]
    rows = [
        [x.state, count(x.total), count(x.own), x.slots, ms(x.handler.p50_ns), ms(x.handler.p99_ns),
         ratio(x.handler.p50_ns, empty.handler.p50_ns), ratio(x.handler.p99_ns, empty.handler.p99_ns),
         ms(x.service.p50_ns), ratio(x.service.p50_ns, empty.service.p50_ns)]
        for x in listings
    ]  # fmt: skip
    rows.append(["baseline: GET /me (auth function)", "", "", "", ms(me_t.p50_ns), ms(me_t.p99_ns), "", "", "", ""])
    return table(
        f"3. GET time-slots for 31 days ({LIST_FIRST}..{LIST_LAST}), uncached, through the providers handler",
        ["appointments in table", "total rows", "measured provider's rows", "slots returned", "handler p50 ms",
         "handler p99 ms", "p50 vs empty", "p99 vs empty", "free_slots() p50 ms", "free_slots() vs empty"],
        rows,
        f"{LISTING_RUNS} timed calls per column after 5 warm-ups; REDIS_URL empty, so every call reads the "
        "rules and appointments from Postgres and generates the slots (X-Cache: miss checked). free_slots() "
        "is ProviderSchedule.free_slots in its own transaction on the handler's engine, without HTTP, auth "
        f"and response models. {empty.statements} SQL statements per handler call. Bulk rows: {PROVIDERS} "
        f"providers x {APPOINTMENTS // PROVIDERS} appointments over {BULK_POSITIONS // 32} days from "
        f"{BULK_FIRST:%Y-%m-%d} (70% confirmed, 10% each cancelled / expired / reserved), {PATIENTS:,} patients, "
        "distinct (provider, time) and (patient, time); VACUUM (ANALYZE) and CHECKPOINT after each insert. "
        f"The last row adds {HISTORY_ROWS:,} older confirmed rows of the measured provider only (a busy "
        "provider's history). With 100k rows the provider also has appointments inside the window (see 3b: "
        "rows returned), which the empty table cannot have; decoding them (pg8000 parses every timestamptz "
        "with strptime, 5 per ORM row) is part of the difference, the table size is not.",
    )  # fmt: skip


def plans_table(listings: list[Listing]) -> Table:
    rows = [
        [x.state, x.plan.get("scan", "?"), count(x.plan.get("visited", 0)), count(x.plan.get("returned", 0)),
         count(x.plan.get("removed", 0)), f"{x.plan.get('hit', 0)} / {x.plan.get('read', 0)}",
         f"{x.plan.get('execution_ms', 0.0):.3f}"]
        for x in listings
    ]  # fmt: skip
    index_cond = next((x.plan["index_cond"] for x in listings if x.plan.get("index_cond")), "")
    return table(
        "3b. The time-slots appointments query: EXPLAIN (ANALYZE, BUFFERS)",
        ["appointments in table", "plan (index)", "rows visited", "rows returned", "removed by filter",
         "shared buffers hit / read", "execution ms"],
        rows,
        "The exact statement and parameters the handler sent (captured from its engine), explained on a "
        f"separate connection. Index condition: `{index_cond}`. Rows visited = returned + removed by filter: "
        "the condition bounds start_time on both sides (appointments are one slot long), so the scan stays "
        "inside the window however much history the provider has.",
    )  # fmt: skip


def handler_tables(database_url: str) -> list[Table]:
    fixture = Fixture(database_url)
    try:
        hello_t, me_t = measure_baselines(fixture)
        posts = measure_posts(fixture)
        listings = [measure_listing(fixture, "empty table")]
        log(f"inserted {APPOINTMENTS:,} appointments in {bulk_appointments(fixture.admin, fixture.measured):.1f} s")
        listings.append(measure_listing(fixture, f"{APPOINTMENTS:,} appointments"))
        log(f"inserted {HISTORY_ROWS:,} history rows in {provider_history(fixture.admin, fixture.measured):.1f} s")
        listings.append(measure_listing(fixture, f"{APPOINTMENTS:,} + {HISTORY_ROWS:,} past rows of this provider"))
    finally:
        fixture.close()
    return [storing_table(posts, hello_t, me_t), listing_table(listings, me_t), plans_table(listings)]


def run() -> list[Table]:
    tables = [generation_table()]
    log("creating a throwaway database")
    with throwaway_database() as database_url, patched_environ(**bench_environment(database_url)), quiet():
        tables.extend(handler_tables(database_url))
    return tables
