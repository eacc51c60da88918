"""Availability search, next-available and the provider directory, through the real
providers Lambda handler (API Gateway v2.0 events into `handler`, clock pinned).

1. GET /availability for 50 providers x 7 days, every day served from the Redis slot
   cache (warmed first), against the cached 7-day GET /providers/{id}/time-slots of one
   of them (X-Cache: hit) in the same run. Goal: search p50 within 10x the listing p50.
2. GET /providers/{id}/next-available, warm cache, first free slot a few days out (and,
   for reference, ten days out: two week-long walks), against the same listing. Goal: 3x.
3. GET /directory/providers?q=<prefix>&limit=20 for a common and a rare prefix (and
   specialty=) at 1,000 and at 100,000 providers (bulk-inserted with varied names and
   specialties, then VACUUM ANALYZE), and the EXPLAIN (ANALYZE, BUFFERS) of the
   directory statement the handler sent at 100,000. Goal: 100k p50 within 3x 1k p50.

Runs in a throwaway database (bench/booking_world.py) that is dropped at the end, with
the Redis keys it wrote.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from reservations.domain.providers import SPARSE_MATCHES

from .booking_world import (
    LIST_FIRST,
    NOW,
    OPEN_DAYS,
    TODAY,
    ZONE,
    World,
    booking_world,
    day_slots,
    listing_event,
    logger,
    weekly_availability,
)
from .common import (
    NO_HASH,
    Table,
    Timing,
    body_of,
    call,
    count,
    fresh_function,
    http_event,
    markdown,
    measure,
    ms,
    ratio,
    redis_url,
    release_function,
    table,
)
from .scheduling_bench import Statement, captured_sql

CALLS = int(os.environ.get("BENCH_CALLS", "200"))  # 200 by default: the slowest row costs ~0.2 s a call
WARMUP = 20
SEARCH_PROVIDERS = 50
SEARCH_DAYS = 7
SEARCH_GOAL = 10.0
NEXT_GOAL = 3.0
DIRECTORY_GOAL = 3.0
SMALL, LARGE = 1_000, 100_000
LATE_DAYS = (4, 10)  # where the next-available providers' availability starts (days from TODAY)
Q_PREFIX = "ros"  # the start of one surname of forty: 1/40 of the directory
RARE_SURNAME, RARE_EVERY, RARE_AT = "Zoltan", 10_000, 500  # dir-500, dir-10500, ...: 1 in 1,000, 10 in 100,000
RARE_PREFIX = "zol"
SPECIALTY = "Dermatology"  # one specialty of sixteen

# Space-separated word lists (split in SQL).
FIRST_NAMES = (
    "Ada Alan Amara Anders Beatriz Bruno Chen Chloe Dmitri Elena Emeka Farah Gustavo Hana Ines Ivan Jonas "
    "Kenji Leila Lucas Maria Marek Nadia Omar Priya Rafael Sofia Tariq Yuki Zara"
)
SURNAMES = (
    "Abbott Bauer Castillo Dubois Eriksen Fischer Garcia Haddad Ito Jensen Kowalski Larsen Moreau Nakamura "
    "Okafor Petrov Quinn Rossi Schmidt Tanaka Usman Varga Weber Xu Yilmaz Zhang Novak Silva Costa Murphy Kim "
    "Singh Andersson Horvat Lopez Mendes Fernandes Kaur Oliveira Brennan"
)
SPECIALTIES = (
    "Cardiology",
    "Dermatology",
    "Endocrinology",
    "Family Medicine",
    "Gastroenterology",
    "Neurology",
    "Obstetrics",
    "Oncology",
    "Ophthalmology",
    "Orthopedics",
    "Pediatrics",
    "Psychiatry",
    "Pulmonology",
    "Radiology",
    "Rheumatology",
    "Urology",
)

log = logger("search")


def timed(action: Callable[[], object]) -> Timing:
    return measure(action, runs=CALLS, warmup=WARMUP)


# --- fixtures --------------------------------------------------------------------------


def post_late_availability(world: World, provider_id: int, first_day: int) -> None:
    """The bench week (every day 7am-7pm New York) from TODAY + first_day only."""
    from reservations.domain.availability import Availability
    from reservations.domain.scheduling import PostedAvailability

    period = dataclasses.replace(weekly_availability().periods[0], start_date=TODAY + timedelta(days=first_day))
    touched = frozenset(TODAY + timedelta(days=i) for i in range(OPEN_DAYS))
    caller = world.container.accounts.verify(world.token(provider_id, "provider"))
    world.container.schedule.post_availability(
        caller, provider_id, PostedAvailability(Availability((period,), {}, {}), touched, None)
    )
    world.redis_providers.add(provider_id)


def insert_directory(engine: Engine, first: int, last: int) -> None:
    """Providers dir-<first>..dir-<last> in one INSERT ... SELECT: first name, surname and
    specialty spread evenly over any run of numbers (7 and 3 are prime to 40 and 16; the
    block shifts vary the combinations, 1,200 full names), and a rare surname for one in
    RARE_EVERY. The users trigger gives each its default visit type."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO users (name, email, role, password_hash, timezone, specialty)
                SELECT w.f[1 + mod(g.i, cardinality(w.f))] || ' ' || CASE
                           WHEN mod(g.i, :rare_every) = :rare_at THEN :rare
                           ELSE w.s[1 + mod(7 * g.i + g.i / 120, cardinality(w.s))] END,
                       'dir-' || g.i || '@bench.example', 'provider', :hash, :zone,
                       w.p[1 + mod(3 * g.i + g.i / 240, cardinality(w.p))]
                FROM (
                    SELECT string_to_array(:f, ' ') AS f, string_to_array(:s, ' ') AS s, CAST(:p AS text[]) AS p
                ) AS w
                CROSS JOIN generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g(i)
                """
            ),
            {
                "f": FIRST_NAMES,
                "s": SURNAMES,
                "p": list(SPECIALTIES),
                "first": first,
                "last": last,
                "hash": NO_HASH,
                "zone": ZONE,
                "rare": RARE_SURNAME,
                "rare_every": RARE_EVERY,
                "rare_at": RARE_AT,
            },
        )
    with engine.connect() as connection:
        # VACUUM too, as autovacuum would: it merges the GIN index's pending list (a bulk
        # load leaves it there), which ANALYZE alone does not.
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE users, visit_types"))


def provider_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM users WHERE role = 'provider'")).scalar_one())


def grow_directory(engine: Engine, target: int) -> tuple[int, float]:
    """Insert providers up to `target`; the count reached and the seconds it took."""
    started = time.perf_counter()
    have = provider_count(engine)
    if have < target:
        insert_directory(engine, have, target - 1)
    seconds = time.perf_counter() - started
    log(f"directory at {count(target)} providers ({seconds:.1f} s to insert and VACUUM ANALYZE)")
    return provider_count(engine), seconds


def cached_keys_present(provider_days: dict[int, Sequence[date]]) -> int:
    """How many of these provider-days have a Redis value (written by the warm-up)."""
    import redis

    from reservations.adapters.slot_cache import day_key

    keys = [day_key(provider_id, day) for provider_id, days in provider_days.items() for day in days]
    client = redis.Redis.from_url(redis_url())
    try:
        return sum(value is not None for value in client.mget(keys))
    finally:
        client.close()


def reads_slot_sources(statements: Sequence[Statement]) -> bool:
    """Whether a call computed any day (read availability or appointments from Postgres)."""
    return any(re.search(r"FROM (availability_periods|appointments)\b", s.sql) for s in statements)


def checked_warm(module: Any, event: dict[str, Any], label: str) -> dict[str, Any]:
    """Warm the cache with one call, then prove the next computes nothing."""
    call(module.handler, event)
    with captured_sql(module.container.engine) as statements:
        response = call(module.handler, event)
    if reads_slot_sources(statements):
        raise RuntimeError(f"{label}: a warm call still computed days from Postgres")
    return response


# --- 1 and 2: search and next-available ----------------------------------------------


@dataclass
class Slots:
    listing: Timing
    search: Timing
    next_available: list[tuple[int, Timing]]
    search_slots: int
    listing_slots: int
    cached_days: int


def measure_slots(world: World, module: Any, token: str) -> Slots:
    ids = world.providers["search"]
    days = [LIST_FIRST + timedelta(days=i) for i in range(SEARCH_DAYS)]
    search_event = http_event(
        "GET",
        "/availability",
        token=token,
        query={
            "provider_ids": ",".join(map(str, ids)),
            "start_date": days[0].isoformat(),
            "end_date": days[-1].isoformat(),
        },
    )
    single = listing_event(token, ids[0], days[0], SEARCH_DAYS)
    found = body_of(checked_warm(module, search_event, "search"))
    cached_days = cached_keys_present(dict.fromkeys(ids, days))
    if cached_days != len(ids) * len(days):
        raise RuntimeError(f"only {cached_days} of {len(ids) * len(days)} provider-days are cached")
    listed = body_of(call(module.handler, single))

    def listing() -> None:
        if call(module.handler, single)["headers"].get("x-cache") != "hit":
            raise RuntimeError("expected X-Cache: hit on the single listing")

    nexts = []
    for provider_id, first_day in zip(world.providers["late"], LATE_DAYS, strict=True):
        event = http_event("GET", f"/providers/{provider_id}/next-available", token=token)
        answer = body_of(checked_warm(module, event, "next-available"))
        expected = day_slots(first_day)[0]
        if datetime.fromisoformat(answer["start_time"]) != expected:
            raise RuntimeError(f"next-available answered {answer}, expected {expected.isoformat()}")
        nexts.append((first_day, timed(lambda event=event: call(module.handler, event))))
    return Slots(
        listing=timed(listing),
        search=timed(lambda: call(module.handler, search_event)),
        next_available=nexts,
        search_slots=len(found),
        listing_slots=len(listed),
        cached_days=cached_days,
    )


# --- 3: the directory ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    query: str
    text: str
    sql: str
    parameters: Any

    @property
    def top_node(self) -> str:
        return self.text.splitlines()[0].split("  (")[0].strip()

    @property
    def indexes(self) -> list[str]:
        found = re.findall(r"(?:Index Scan|Index Only Scan)(?: Backward)? (?:using|on) (\w+)", self.text)
        return list(dict.fromkeys(found))

    @property
    def scan_node(self) -> str:
        scans = r"(Bitmap Heap Scan|Index Only Scan|Index Scan|Seq Scan)(?: Backward)?(?: using \w+)? on users\b"
        match = re.search(scans, self.text)
        return match.group(0) if match else "?"

    @property
    def rows_removed(self) -> int:
        return sum(int(n) for n in re.findall(r"Rows Removed by (?:Filter|Index Recheck): (\d+)", self.text))

    @property
    def seq_scan_on_users(self) -> bool:
        return re.search(r"Seq Scan on users\b", self.text) is not None

    @property
    def execution_ms(self) -> str:
        match = re.search(r"Execution Time: ([\d.]+) ms", self.text)
        return match.group(1) if match else "?"


def directory_statement(statements: Sequence[Statement]) -> Statement:
    for statement in statements:
        if (
            re.search(r"FROM users\b", statement.sql)
            and "LIMIT" in statement.sql
            and "ORDER BY users.id" in statement.sql
        ):
            return statement
    raise RuntimeError("the directory call sent no users query with ORDER BY id LIMIT")


def explain_directory(world: World, module: Any, event: dict[str, Any], query: str) -> Plan:
    """EXPLAIN (ANALYZE, BUFFERS) of the exact users statement (and parameters) the handler
    sent for this event, captured from its engine."""
    with captured_sql(module.container.engine) as statements:
        call(module.handler, event)
    statement = directory_statement(statements)
    with world.admin.connect() as connection:
        rows = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + statement.sql, tuple(statement.parameters or ())
        ).all()
        connection.rollback()
    return Plan(query, "\n".join(str(row[0]) for row in rows), statement.sql, statement.parameters)


@dataclass
class Directory:
    timings: list[tuple[int, str, Timing]]  # providers, query, timing
    plans: list[Plan]
    insert_seconds: float


def directory_events(token: str) -> dict[str, dict[str, Any]]:
    queries = [{"q": Q_PREFIX}, {"q": RARE_PREFIX}, {"specialty": SPECIALTY}]
    return {
        "&".join(f"{k}={v}" for k, v in query.items()): http_event(
            "GET", "/directory/providers", token=token, query={**query, "limit": "20"}
        )
        for query in queries
    }


def expected_page(query: str, providers: int) -> int:
    """Items on the first page: 20, or every match of the rare prefix (fewer than 20)."""
    if query == f"q={RARE_PREFIX}":
        return (providers - 1 - RARE_AT) // RARE_EVERY + 1  # the directory numbers start below RARE_AT
    return 20


def measure_directory(world: World, module: Any, token: str) -> Directory:
    events = directory_events(token)
    timings = []
    insert_seconds = 0.0
    for target in (SMALL, LARGE):
        providers, seconds = grow_directory(world.admin, target)
        insert_seconds += seconds
        for query, event in events.items():
            page, expected = body_of(call(module.handler, event)), expected_page(query, providers)
            if len(page["items"]) != expected or (page["next_cursor"] is None) != (expected < 20):
                raise RuntimeError(f"{query} at {providers} providers: expected {expected} items, got {page}")
            timings.append((providers, query, timed(lambda event=event: call(module.handler, event))))
    plans = [explain_directory(world, module, event, query) for query, event in events.items()]
    return Directory(timings, plans, insert_seconds)


# --- tables ----------------------------------------------------------------------------


def met(value: float, goal: float) -> str:
    return "met" if value <= goal else "not met"


def cells(timing: Timing, baseline: Timing) -> list[Any]:
    """calls, p50 and p99 in ms, and both against the baseline's."""
    return [
        timing.runs,
        ms(timing.p50_ns, 3),
        ms(timing.p99_ns, 3),
        ratio(timing.p50_ns, baseline.p50_ns),
        ratio(timing.p99_ns, baseline.p99_ns),
    ]


def slot_tables(slots: Slots) -> list[Table]:
    base = slots.listing
    rows: list[list[Any]] = [
        ["time-slots, 1 provider x 7 days, cached (X-Cache: hit) (baseline)", *cells(base, base)],
        [
            f"availability search, {SEARCH_PROVIDERS} providers x {SEARCH_DAYS} days, all cached",
            *cells(slots.search, base),
        ],
    ]
    for first_day, timing in slots.next_available:
        walks = 1 + (first_day - 1) // 7
        label = f"next-available, first free slot {first_day} days out ({walks} cached week{'s' * (walks > 1)})"
        rows.append([label, *cells(timing, base)])
    search_ratio = slots.search.p50_ns / base.p50_ns
    next_ratio = slots.next_available[0][1].p50_ns / base.p50_ns
    timings = table(
        "Availability search and next-available, warm cache, through the providers handler",
        ["case", "calls", "p50 ms", "p99 ms", "p50 vs listing", "p99 vs listing"],
        rows,
        f"{CALLS} timed calls per case after {WARMUP} warm-up calls, one process, handlers called in-process "
        f"(clock pinned to {NOW:%Y-%m-%d %H:%M} UTC), local Postgres and Redis ({redis_url()}). Providers are open "
        f"every day 7am-7pm {ZONE} (48 slots a day). The search asks for {LIST_FIRST} to "
        f"{LIST_FIRST + timedelta(days=SEARCH_DAYS - 1)} with the default limit and returns {slots.search_slots} "
        f"slots (earliest first); the listing returns {slots.listing_slots}. Before timing, one call warmed the "
        f"cache ({slots.cached_days} provider-days in Redis) and a second was checked to read neither "
        "availability_periods nor appointments. next-available starts at now + 24 h notice and walks the cache "
        "a week at a time; its providers' availability starts that many days after today.",
    )
    goals = table(
        "Search goals",
        ["goal", "measured", "met"],
        [
            [
                f"{SEARCH_PROVIDERS}-provider x {SEARCH_DAYS}-day cached search p50 <= {SEARCH_GOAL:g}x one cached "
                "listing p50",
                f"{search_ratio:.2f}x",
                met(search_ratio, SEARCH_GOAL),
            ],
            [
                f"next-available p50 (first free slot {slots.next_available[0][0]} days out) <= {NEXT_GOAL:g}x one "
                "cached listing p50",
                f"{next_ratio:.2f}x",
                met(next_ratio, NEXT_GOAL),
            ],
        ],
    )
    return [timings, goals]


def directory_tables(directory: Directory) -> list[Table]:
    small = {query: t for providers, query, t in directory.timings if providers == SMALL}
    large = {query: t for providers, query, t in directory.timings if providers != SMALL}
    first_names, surnames = len(FIRST_NAMES.split()), len(SURNAMES.split())
    rows = [[count(providers), query, *cells(timing, small[query])] for providers, query, timing in directory.timings]
    timings = table(
        "Provider directory: GET /directory/providers?...&limit=20",
        ["providers", "query", "calls", "p50 ms", "p99 ms", "p50 vs 1,000 providers", "p99 vs 1,000 providers"],
        rows,
        f"Providers bulk-inserted (one INSERT ... SELECT, the trigger adding each default visit type, then "
        f"VACUUM ANALYZE) with {first_names} first names x {surnames} surnames and {len(SPECIALTIES)} "
        f"specialties spread evenly: q={Q_PREFIX} matches 1/{surnames} of them and specialty= 1/"
        f"{len(SPECIALTIES)} (full pages of 20 with a next cursor); q={RARE_PREFIX} matches the one provider in "
        f"{count(RARE_EVERY)} named {RARE_SURNAME} (1 at {count(SMALL)}, 10 at {count(LARGE)}: one short page). "
        f"{CALLS} timed calls after {WARMUP} warm-up calls; the {count(SMALL)} include the search providers. "
        f"Inserting and vacuuming took {directory.insert_seconds:.1f} s.",
    )
    goal_rows = []
    for query in (f"q={Q_PREFIX}", f"q={RARE_PREFIX}"):
        factor = large[query].p50_ns / small[query].p50_ns
        goal_rows.append(
            [
                f"{query} p50 at {count(LARGE)} providers <= {DIRECTORY_GOAL:g}x at {count(SMALL)}",
                f"{factor:.2f}x",
                met(factor, DIRECTORY_GOAL),
            ]
        )
    goals = table(
        "Directory goal",
        ["goal", "measured", "met"],
        goal_rows,
        f"The goal is stated for q=<prefix>; q={Q_PREFIX} is a common prefix, q={RARE_PREFIX} a rare one. A prefix "
        f"with at most {SPARSE_MATCHES:,} matches has them read from the full-text index and sorted, a denser one "
        f"walks the primary key in order (one statement, both under one-time filters): at {count(LARGE)} "
        f"q={Q_PREFIX} (1/{len(SURNAMES.split())} of them) takes the walk, every other case the sort.",
    )
    fenced = "\n\n".join(
        f"{plan.query}, parameters {tuple(plan.parameters or ())}:\n\n```\n{plan.sql}\n\n{plan.text}\n```"
        for plan in directory.plans
    )
    plans = table(
        f"Directory query plans at {count(LARGE)} providers: EXPLAIN (ANALYZE, BUFFERS)",
        [
            "query",
            "top plan node",
            "scan on users",
            "indexes used",
            "Seq Scan on users",
            "rows removed by filter",
            "execution ms",
        ],
        [
            [
                plan.query,
                plan.top_node,
                plan.scan_node,
                ", ".join(plan.indexes) or "none",
                "yes" if plan.seq_scan_on_users else "no",
                count(plan.rows_removed),
                plan.execution_ms,
            ]
            for plan in directory.plans
        ],
        "The exact users statement and parameters the handler sent (captured from its engine), explained on "
        "the bench database:\n\n" + fenced,
    )
    return [timings, goals, plans]


def run() -> list[Table]:
    started = time.perf_counter()
    with booking_world(
        "search",
        providers={"search": SEARCH_PROVIDERS, "late": len(LATE_DAYS)},
        patients={"patient": 1},
        without_availability=("late",),
    ) as world:
        for provider_id, first_day in zip(world.providers["late"], LATE_DAYS, strict=True):
            post_late_availability(world, provider_id, first_day)
        token = world.token(world.patients["patient"][0])
        module = fresh_function("providers", NOW)
        try:
            log("timing search and next-available")
            slots = measure_slots(world, module, token)
            log("timing the directory")
            directory = measure_directory(world, module, token)
        finally:
            release_function(module)
    tables = [*slot_tables(slots), *directory_tables(directory)]
    tables[0]["notes"] += f" Whole suite: {time.perf_counter() - started:.1f} s."
    return tables


if __name__ == "__main__":
    print("\n\n".join(markdown(item) for item in run()))
